"""trainer.run: the spec contract, clear errors, atomic output, cancel by SIGTERM; trainer.params and progress."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainer.conftest import ROOT, child_env, run_job, spec_for, start_job, stop
from trainer.params import ARGS, DEFAULTS, FIELD_DOCS, parse_params
from trainer.progress import map_metric_name


def test_every_args_field_has_a_docstring_and_defaults_are_json():
    for kind, cls in ARGS.items():
        assert cls.__doc__, kind
        assert set(FIELD_DOCS[kind]) == set(DEFAULTS[kind]), f"{kind}: fields without a docstring"
        assert all(doc.strip() for doc in FIELD_DOCS[kind].values())
        assert json.loads(json.dumps(DEFAULTS[kind])) == DEFAULTS[kind]
        assert parse_params(kind, {}) == cls()  # every kind runs from an empty params dict


def test_params_and_run_import_without_torch():
    code = "import sys, trainer.params, trainer.run; assert 'torch' not in sys.modules, 'torch imported'; print(sorted(trainer.run.DEFAULTS))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "dpo" in out.stdout and "reward" in out.stdout


def test_parse_params_rejects_unknown_names_and_wrong_types():
    assert parse_params("dpo", {"beta": 1}).beta == 1.0  # JSON ints are fine where floats are wanted
    with pytest.raises(ValueError, match="unknown param.*lr"):
        parse_params("dpo", {"lr": 0.1})
    with pytest.raises(ValueError, match="'beta' must be float"):
        parse_params("dpo", {"beta": "high"})
    with pytest.raises(ValueError, match="unknown job kind"):
        parse_params("sft", {})


def test_metric_names_are_grouped():
    assert map_metric_name("loss") == "loss/total"
    assert map_metric_name("eval_loss") == "eval/loss"
    assert map_metric_name("eval_rewards/accuracies") == "eval/rewards/accuracies"
    assert map_metric_name("rewards/chosen") == "rewards/chosen"
    assert map_metric_name("grad_norm") == "train/grad_norm"


def test_missing_base_model_fails_with_a_clear_message(tmp_path, tiny):
    missing = tmp_path / "no-such-model"
    out = tmp_path / "out"
    result = run_job(tmp_path, spec_for("dpo", out, base_model=str(missing), dataset_path=str(tiny.pairs)))
    assert result.returncode == 1
    assert result.last["event"] == "error"
    assert str(missing) in result.last["message"] and "base model" in result.last["message"]
    assert not out.exists()
    assert not list(tmp_path.glob("out.partial-*"))


def test_bad_spec_fails_before_any_work(tmp_path, tiny):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("not ours")
    result = run_job(
        tmp_path, spec_for("generate", existing, base_model=str(tiny.policy), dataset_path=str(tiny.pairs))
    )
    assert result.returncode == 1 and "already exists" in result.last["message"]
    assert (existing / "keep.txt").read_text() == "not ours"

    result = run_job(
        tmp_path, spec_for("dpo", tmp_path / "o", base_model=str(tiny.policy), params={"betta": 0.1})
    )
    assert result.returncode == 1 and "betta" in result.last["message"]


def test_failed_write_leaves_no_output_dir(tmp_path, tiny):
    """Everything is written (model or generations), then the job fails just before the rename."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt_id": 1, "prompt": "Write a short reply about tea.\n"}) + "\n")
    out = tmp_path / "generated"
    env = child_env() | {"RANKFORGE_TRAINER_FAIL_AT": "before_rename"}
    spec = spec_for(
        "generate", out, base_model=str(tiny.policy), prompts_path=str(prompts), params={"max_new_tokens": 4}
    )
    result = run_job(tmp_path, spec, env=env)
    assert result.returncode == 1
    assert "before rename" in result.last["message"]
    assert any(e["event"] == "progress" and e["message"] == "writing output" for e in result.events)
    assert not out.exists()
    assert not list(tmp_path.glob("generated.partial-*"))


@pytest.mark.training
def test_sigterm_cancels_promptly_and_leaves_nothing(tmp_path, tiny):
    out = tmp_path / "cancelled"
    spec = spec_for(
        "reward", out, base_model=str(tiny.policy), dataset_path=str(tiny.pairs), params={"max_steps": 100000}
    )
    child, _ = start_job(tmp_path, spec)
    try:
        events = []
        for line in child.stdout:  # wait until training really runs
            events.append(json.loads(line))
            if events[-1]["event"] == "progress" and events[-1]["message"].startswith("step"):
                break
        assert (tmp_path / f"cancelled.partial-{child.pid}").is_dir()
        sent = time.monotonic()
        child.terminate()
        child.wait(timeout=10)
        assert time.monotonic() - sent < 10
        rest = [json.loads(line) for line in child.stdout.read().splitlines() if line.startswith("{")]
    finally:
        stop(child)
    assert child.returncode == 143
    assert rest[-1] == {"event": "error", "message": "cancelled (SIGTERM)"}
    assert not out.exists()
    assert not list(Path(tmp_path).glob("cancelled.partial-*"))
