"""Multi-process training that has been run: `accelerate launch` with 2 CPU processes (gloo), the shipped `cpu`
config, for reward and DPO end to end. Same global batches as one process (train 2 x 4 vs 1 x 8, eval 2 x 8 vs
1 x 16: DPO's held-out accuracy is a mean over eval batches), so training and held-out metrics agree within
TOLERANCE; one progress stream, one done event, one output directory. The shipped GPU configs (DDP, FSDP,
DeepSpeed ZeRO-2/3) are parsed and validated by accelerate's own loader (DeepSpeed without importing it when the
optional extra is not installed)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.trainer.conftest import ROOT, JobResult, child_env, parse_events, run_job, spec_for
from trainer.launch import ACCELERATE_CONFIGS, resolve_accelerate_config
from trainer.launch_check import validate_accelerate_config

pytestmark = pytest.mark.training
TOLERANCE = 1e-3
"""Relative: the same sums in a different order (per-process means, then the gradient all-reduce)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(tmp_path, spec: dict, processes: int = 2) -> JobResult:
    """What the worker runs for launcher accelerate (app.jobs.trainer_child.trainer_command), on CPU processes."""
    spec_path = tmp_path / f"spec-{spec['kind']}-{processes}.json"
    spec_path.write_text(json.dumps(spec | {"launcher": "accelerate"}))
    env = child_env() | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS["cpu"]),
               "--num_processes", str(processes), "--main_process_port", str(_free_port()),
               "-m", "trainer.run", str(spec_path)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return JobResult(done.returncode, parse_events(done.stdout), done.stderr)


@pytest.mark.parametrize("kind", ["reward", "dpo"])
def test_two_cpu_processes_match_one_process(tmp_path, tiny, kind):
    params = {"max_steps": 3, "logging_steps": 1, "max_length": 64, "learning_rate": 1e-3}
    base = tiny.reward if kind == "reward" else tiny.policy
    one = run_job(tmp_path, spec_for(kind, tmp_path / "one", base_model=str(base), dataset_path=str(tiny.pairs),
                                     params=params | {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 16}),
                  env=child_env() | {"OMP_NUM_THREADS": "1"})  # fmt: skip
    two = launch(tmp_path, spec_for(kind, tmp_path / "two", base_model=str(base), dataset_path=str(tiny.pairs),
                                    params=params | {"per_device_train_batch_size": 4, "per_device_eval_batch_size": 8}))  # fmt: skip
    assert two.returncode == 0, two.stderr[-4000:]
    first, second = one.done["metrics"], two.done["metrics"]
    assert second["train/steps"] == first["train/steps"] == 3
    compared = [name for name in ("loss/total", "train/loss_mean", "eval/accuracy", "eval/margin", "eval/loss",
                                  "eval/rewards/accuracies", "eval/rewards/margins") if name in first]  # fmt: skip
    assert len(compared) >= 3
    for name in compared:
        assert second[name] == pytest.approx(first[name], rel=TOLERANCE, abs=1e-5), (name, first, second)

    # One stream: one done event, progress reported by the main process alone (monotonic), one output.
    assert len(two.of("done")) == 1 and not two.of("error")
    fractions = [event["progress"] for event in two.of("progress")]
    assert fractions == sorted(fractions)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("two")] == ["two"]
    assert (tmp_path / "two" / "manifest.json").is_file()


@pytest.mark.parametrize("name", ["cpu", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_shipped_accelerate_configs_parse_and_validate(name):
    path = resolve_accelerate_config(name)
    config = validate_accelerate_config(path)
    expected = {"cpu": "MULTI_GPU", "ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED",
                "deepspeed_zero3": "DEEPSPEED"}  # fmt: skip
    assert config["distributed_type"] == expected[name] and config["num_processes"] >= 2
    if name.startswith("deepspeed"):
        assert config["deepspeed_config"]["zero_stage"] == int(name[-1])


def test_a_broken_accelerate_config_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ACCELERATE_CONFIGS["deepspeed_zero2"]).read_text().replace("zero_stage: 2", "zero_stage: 7"))
    with pytest.raises(ValueError, match="zero_stage"):
        validate_accelerate_config(bad)
    with pytest.raises(ValueError, match="neither a shipped config"):
        resolve_accelerate_config("nope")
