"""Real data as a new user brings it: HH-RLHF (multi-turn chats) imported, then `train reward` with no flags,
on a BERT-style encoder base (no EOS, no chat template). Before issue 13 the job failed while building its
snapshot ("prompt 1 is a multi-message chat and cannot be a standard (string) prompt")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.worker import run_one
from tests.conftest import SHARED_DATA, missing
from tests.helpers import import_lines, make_project

ROOT = Path(__file__).resolve().parents[2]
HH_FILE = SHARED_DATA / "hh_rlhf_harmless_test_2000.jsonl"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hh_rlhf_trains_a_reward_model_on_an_encoder_with_no_flags(client, users, tmp_path):
    if not HH_FILE.is_file():
        missing(f"reference data {HH_FILE.name} not found in {SHARED_DATA} (set RANKFORGE_SHARED_DATA)")
    from trainer.tiny import build_tiny_encoder

    lines = HH_FILE.read_text(encoding="utf-8").splitlines()[:48]
    texts = [json.loads(line)["chosen"] for line in lines]
    encoder = build_tiny_encoder(tmp_path / "encoder", texts, vocab_size=500)

    admin = users.create("root", "admin")
    engineer = users.create("eve", "engineer")
    project = make_project(client, admin, name="HH", slug="hh")
    assert import_lines(client, admin, project["id"], "\n".join(lines).encode(), fmt="hh-rlhf").status_code == 200
    response = client.post("/api/v1/models", headers=engineer["headers"],
                           json={"name": "tiny-bert", "path": str(encoder), "kind": "reward"})  # fmt: skip
    assert response.status_code == 201, response.text

    params = {"max_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 4, "max_length": 64}
    response = client.post("/api/v1/jobs", headers=engineer["headers"],
                           json={"kind": "reward", "project_id": project["id"], "base_model": "tiny-bert",
                                 "params": params})  # fmt: skip
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert run_one("w1") == job_id
    job = client.get(f"/api/v1/jobs/{job_id}", headers=engineer["headers"]).json()
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    dataset = client.get(f"/api/v1/datasets/{job['result']['dataset_id']}", headers=engineer["headers"]).json()
    assert dataset["status"] == "ready"
    # Long HH conversations keep their end: most pairs are truncated at the prompt's start, not dropped.
    assert metrics["train/pairs_truncated"] > 0
    assert metrics["train/pairs_used"] == metrics["train/pairs"] - metrics["train/pairs_dropped"]

    version = client.get(f"/api/v1/models/{job['result']['model_version_id']}", headers=engineer["headers"]).json()
    assert version["manifest"]["tokenizer"]["eos_source"] == "sep"
    assert version["manifest"]["tokenizer"]["chat_template"] == "rankforge-plain-transcript-v1"
    assert (Path(version["path"]) / "README.md").is_file()

    page = client.get(f"/jobs/{job_id}", headers=engineer["headers"])
    dropped_share = metrics["train/pairs_dropped"] / metrics["train/pairs"]
    assert ("were dropped" in page.text) == (dropped_share > 0.05)


def test_the_job_page_warns_when_more_than_5_percent_were_dropped():
    from app.jobs.pages import dropped_warning
    from app.models import Job

    def job(metrics: dict) -> Job:
        return Job(kind="reward", result={"metrics": metrics})

    assert dropped_warning(job({"train/pairs": 100, "train/pairs_dropped": 5, "train/pairs_truncated": 40})) is None
    warning = dropped_warning(job({"train/pairs": 100, "train/pairs_dropped": 6, "train/pairs_truncated": 40}))
    assert warning.startswith("6 of 100 training pairs (6%) were dropped") and "40 more were kept" in warning
    assert "training rows" in dropped_warning(job({"train/rows": 10, "train/rows_dropped": 2}))
    assert dropped_warning(job({})) is None and dropped_warning(Job(kind="export")) is None
