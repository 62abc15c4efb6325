"""KTO: end to end through trainer.run on an unpaired export, shuffling, pairs snapshots unpaired."""

from __future__ import annotations

import json

import pytest

from tests.trainer.conftest import parsed, run_job, spec_for
from trainer import kto
from trainer.data import read_rows

pytestmark = pytest.mark.training


def test_kto_rows_are_shuffled_so_batches_mix_labels(tiny):
    exported = read_rows(tiny.kto, "train")
    assert [row["label"] for row in exported[:4]] == [
        True,
        False,
        True,
        False,
    ]  # an export lists pairs together
    rows = kto.kto_rows(tiny.kto, "train", "kto", seed=0)
    assert sorted(json.dumps(r, sort_keys=True) for r in rows) == sorted(
        json.dumps({k: r[k] for k in ("prompt", "completion", "label")}, sort_keys=True) for r in exported
    )
    batches = [rows[i : i + 8] for i in range(0, len(rows), 8)]
    assert all(any(r["label"] for r in batch) and not all(r["label"] for r in batch) for batch in batches)
    assert rows == kto.kto_rows(tiny.kto, "train", "kto", seed=0)  # the job's seed makes it reproducible
    assert rows != kto.kto_rows(tiny.kto, "train", "kto", seed=1)


def test_kto_job_learns_from_unpaired_feedback(tmp_path, tiny):
    out = tmp_path / "kto-policy"
    spec = spec_for(
        "kto", out, base_model=str(tiny.policy), dataset_path=str(tiny.kto), params={"num_train_epochs": 2}
    )
    result = run_job(tmp_path, spec)
    done = result.done
    assert result.returncode == 0 and done["kind"] == "policy"
    metrics = done["metrics"]
    assert metrics["train/rows"] == 128 and metrics["train/desirable_rows"] == 64
    # Held out: the implicit reward of desirable completions rises above that of undesirable ones.
    assert metrics["eval/rewards/margins"] > 0, metrics
    assert metrics["eval/rewards/chosen"] > metrics["eval/rewards/rejected"]
    logged = {name for e in result.of("metrics") for name in e["metrics"]}
    assert {"loss/total", "rewards/chosen", "rewards/rejected", "train/kl"} <= logged
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["job_kind"] == "kto" and manifest["kind"] == "policy"
    assert (out / "model.safetensors").is_file()


def test_kto_unpairs_a_pairs_snapshot(tmp_path, tiny):
    out_dir = tmp_path / "kto-from-pairs"
    out_dir.mkdir()
    spec = spec_for("kto", out_dir, base_model=str(tiny.policy), dataset_path=str(tiny.chat_pairs),
                    params={"max_steps": 4, "eval_split": ""})  # fmt: skip
    metrics = kto.main(parsed(spec), out_dir)
    assert metrics["train/rows"] == 2 * 64 and metrics["train/desirable_rows"] == 64
    assert metrics["train/steps"] == 4 and "eval/loss" not in metrics
