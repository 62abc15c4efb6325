"""Round trips on real third-party data (../shared/data): import, export, and read the files back with the
tools that consume them (`datasets`, TRL's DPOTrainer and RewardTrainer on a tiny model built here)."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest

from app.datasets.snapshot_files import verify_snapshot
from app.imports.parsers import HH_TURN, hh_transcript
from app.worker import run_one
from tests.conftest import SHARED_DATA
from tests.helpers import import_lines, make_project

REPO_ROOT = Path(__file__).resolve().parents[2]
OASST_FILE = SHARED_DATA / "oasst_en_100_trees.jsonl"
HH_FILE = SHARED_DATA / "hh_rlhf_harmless_test_2000.jsonl"


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"reference data {path.name} not found in {SHARED_DATA} (set RANKFORGE_SHARED_DATA or put the "
                    "shared data folder next to the repository)")  # fmt: skip
    return path


def implied_oasst_pairs(path: Path) -> int:
    """Pairs the human rankings imply, worked out from the raw trees: for every prompter message, its ranked
    assistant replies (deleted messages and their subtrees left out), one pair per two replies of different
    rank."""
    total = 0

    def walk(message: dict) -> None:
        nonlocal total
        if message.get("deleted"):
            return
        replies = message.get("replies") or []
        if message["role"] == "prompter":
            ranks = [r["rank"] for r in replies
                     if r["role"] == "assistant" and not r.get("deleted") and r.get("rank") is not None]  # fmt: skip
            if len(ranks) >= 2:
                total += sum(1 for a, b in combinations(ranks, 2) if a != b)
        for reply in replies:
            walk(reply)

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            walk(json.loads(line)["prompt"])
    return total


def _export(client, staff, project_id: int, body: dict) -> tuple[dict, Path]:
    response = client.post(f"/api/v1/projects/{project_id}/datasets", json=body, headers=staff["headers"])
    assert response.status_code == 202, response.text
    snapshot = response.json()
    assert run_one("round-trip") == snapshot["job_id"]
    job = client.get(f"/api/v1/jobs/{snapshot['job_id']}", headers=staff["headers"]).json()
    assert job["status"] == "succeeded", job
    dataset = client.get(f"/api/v1/datasets/{snapshot['id']}", headers=staff["headers"]).json()
    from app.db import session_scope
    from app.models import DatasetSnapshot

    with session_scope() as db:
        directory = Path(db.get(DatasetSnapshot, dataset["id"]).path)
    verify_snapshot(directory)
    return dataset, directory


def _rows(directory: Path) -> list[dict]:
    return [json.loads(line) for split in ("train", "test")
            for line in (directory / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]  # fmt: skip


@pytest.fixture
def oasst_export(client, users):
    admin = users.create("admin", "admin")
    project = make_project(client, admin, name="OASST", mode="rank")
    response = import_lines(client, admin, project["id"], _need(OASST_FILE).read_bytes(), fmt="oasst")
    assert response.status_code == 200, response.text
    dataset, directory = _export(client, admin, project["id"],
                                 {"format": "pairs", "conversational": True, "split": {"test_fraction": 0.2}})  # fmt: skip
    return dataset, directory


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_oasst_pairs_match_the_human_rankings_and_train_with_trl(oasst_export, tmp_path):
    dataset, directory = oasst_export
    expected = implied_oasst_pairs(OASST_FILE)
    assert expected > 0
    assert dataset["rows"]["train"] + dataset["rows"]["test"] == expected
    rows = _rows(directory)
    assert len(rows) == expected
    assert all(row["chosen"] != row["rejected"] and row["margin"] >= 1 for row in rows)

    import datasets

    loaded = datasets.load_dataset("json", data_files={"train": str(directory / "train.jsonl"),
                                                       "test": str(directory / "test.jsonl")})  # fmt: skip
    assert loaded["train"].num_rows == dataset["rows"]["train"]
    assert loaded["test"].num_rows == dataset["rows"]["test"]
    assert {"prompt", "chosen", "rejected", "comparison_id", "margin", "agreement"} <= set(loaded["train"].column_names)

    _train_dpo_and_reward_for_two_steps(loaded["train"], tmp_path)


def _train_dpo_and_reward_for_two_steps(train, tmp_path: Path) -> None:
    """TRL's trainers on the exported rows as they are (every column kept), 2 optimizer steps each."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    from trainer.tiny import build_tiny_policy, build_tiny_reward, train_tokenizer

    torch.set_num_threads(1)
    texts = [message["content"] for row in train.select(range(min(200, train.num_rows)))
             for message in [*row["prompt"], *row["chosen"], *row["rejected"]]]  # fmt: skip
    tokenizer = train_tokenizer(texts, vocab_size=512)
    policy_dir = build_tiny_policy(tmp_path / "policy", tokenizer)
    reward_dir = build_tiny_reward(tmp_path / "reward", tokenizer)
    common = {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 128, "report_to": "none",
              "save_strategy": "no", "use_cpu": True, "logging_steps": 1, "activation_checkpointing": False,
              "gradient_checkpointing": None,
              "dataloader_num_workers": 0}  # fmt: skip

    dpo = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy_dir),
        args=DPOConfig(output_dir=str(tmp_path / "dpo-out"), **common),
        train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(policy_dir),
    )
    dpo_result = dpo.train()
    assert dpo_result.global_step == 2
    assert torch.isfinite(torch.tensor(dpo_result.training_loss))

    reward = RewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(reward_dir),
        args=RewardConfig(output_dir=str(tmp_path / "reward-out"), **common),
        train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(reward_dir),
    )
    reward_result = reward.train()
    assert reward_result.global_step == 2
    assert torch.isfinite(torch.tensor(reward_result.training_loss))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hh_rlhf_exports_back_to_the_same_transcripts(client, users):
    admin = users.create("admin", "admin")
    project = make_project(client, admin, name="HH", mode="pairwise")
    raw = _need(HH_FILE).read_bytes()
    originals = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    response = import_lines(client, admin, project["id"], raw, fmt="hh-rlhf")
    assert response.status_code == 200, response.text
    dataset, directory = _export(client, admin, project["id"],
                                 {"format": "pairs", "conversational": True, "split": {"test_fraction": 0.1}})  # fmt: skip

    rows, rebuilt = _rows(directory), []
    for row in rows:
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
        rebuilt.append((hh_transcript(row["prompt"], row["chosen"][0]["content"]),
                        hh_transcript(row["prompt"], row["rejected"][0]["content"])))  # fmt: skip
    # Every original pair comes back exactly; duplicates in the file collapse to one comparison.
    assert sorted(set(rebuilt)) == sorted({(o["chosen"], o["rejected"]) for o in originals})
    assert dataset["rows"]["train"] + dataset["rows"]["test"] == len(rebuilt)

    # Rows whose reply spans several turns (flagged hh_multi_turn_completion on import) rebuild exactly too.
    multi_turn = [pair for row, pair in zip(rows, rebuilt, strict=True)
                  if HH_TURN.search(row["chosen"][0]["content"]) or HH_TURN.search(row["rejected"][0]["content"])]  # fmt: skip
    assert multi_turn, "the sample has rows whose reply spans several turns"
    assert set(multi_turn) <= {(o["chosen"], o["rejected"]) for o in originals}
