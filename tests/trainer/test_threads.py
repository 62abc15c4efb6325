"""Trainer children size their CPU threads from the machine (trainer.threads), report where a job's time went,
cache tokenized rows, and train on batches of similar length.

The thread count is read back from real children started with the worker's environment (app.jobs.child.child_env):
each reports torch.get_num_threads() as system/threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import get_settings
from app.jobs.child import child_env as worker_child_env
from tests.trainer.conftest import ROOT, parse_events, spec_for
from trainer import reward, threads
from trainer.encoding import encode_all, encode_rows
from trainer.models import load_reward, load_tokenizer
from trainer.params import parse_params
from trainer.tiny import build_tiny_policy, keyword_pairs, keyword_texts, train_tokenizer

pytestmark = pytest.mark.training


# --- the plan, from settings and the machine -------------------------------------------------------------------


def test_cgroup_quota_caps_the_cpus(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(cpu_max) is None
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: rounded up
    assert threads.cgroup_cpu_limit(cpu_max) == 2
    assert threads.cpu_budget(cpu_max) == min(2, len(os.sched_getaffinity(0)))
    cpu_max.write_text("50000 100000\n")
    assert threads.cpu_budget(cpu_max) == 1
    assert threads.cgroup_cpu_limit(tmp_path / "absent") is None


def test_setting_beats_omp_num_threads_which_beats_the_cpus():
    cpus = threads.cpu_budget()
    assert threads.plan_threads(1, {}) == threads.ThreadPlan(cpus, "cpus", 1, cpus)
    assert threads.plan_threads(2, {}).threads == max(1, cpus // 2)
    assert threads.plan_threads(1, {"OMP_NUM_THREADS": "3"}).threads == 3
    # torchrun sets OMP_NUM_THREADS=1 in every rank of a multi-process launch: not a choice made by anyone
    assert threads.plan_threads(2, {"OMP_NUM_THREADS": "1"}).source == "cpus"
    assert threads.plan_threads(2, {"RANKFORGE_TRAINER_THREADS": "5", "OMP_NUM_THREADS": "1"}).threads == 5
    assert threads.plan_threads(1, {"RANKFORGE_TRAINER_OMP_THREADS": "4"}).threads == 4  # the older name
    assert threads.plan_threads(1, {"RANKFORGE_TRAINER_THREADS": "zero"}).source == "cpus"  # not a count
    # a tiny model keeps one thread unless the count was set
    assert threads.plan_threads(1, {}).for_model(200_000) == 1
    assert threads.plan_threads(1, {"RANKFORGE_TRAINER_THREADS": "3"}).for_model(200_000) == 3
    assert threads.plan_threads(1, {}).for_model(50_000_000) == cpus


def test_the_worker_passes_the_setting_and_the_cache_dir_to_its_children(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RANKFORGE_TRAINER_THREADS", "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    get_settings.cache_clear()
    try:
        env = worker_child_env()
    finally:
        get_settings.cache_clear()
    assert env["RANKFORGE_TRAINER_THREADS"] == "3"
    assert env["RANKFORGE_TRAINER_CACHE"] == str((tmp_path / "data").resolve() / "cache" / "tokenized")
    assert "OMP_NUM_THREADS" not in env  # the child sizes its own threads; the worker no longer forces one


# --- read back from real children --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> tuple[Path, Path]:
    """A policy over 5M parameters (threads are not narrowed for it) and a prompts file of two prompts."""
    root = tmp_path_factory.mktemp("threads")
    rows = keyword_pairs(16, seed=7)
    policy = build_tiny_policy(root / "policy", train_tokenizer(keyword_texts(rows), vocab_size=512),
                               hidden_size=384, num_layers=4, num_heads=6)  # fmt: skip
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_id": i, "prompt": r["prompt"]}) + "\n" for i, r in enumerate(rows[:2])))
    return policy, prompts


def _child_metrics(tmp_path: Path, name: str, policy: Path, prompts: Path, *, env_extra: dict[str, str],
                   cpus: set[int] | None = None) -> dict:  # fmt: skip
    """Run a generate job as the worker does (its child environment, optionally pinned to `cpus`); its metrics."""
    spec = spec_for("generate", tmp_path / name, base_model=str(policy), prompts_path=str(prompts),
                    params={"max_new_tokens": 2, "num_completions": 1, "batch_size": 2})  # fmt: skip
    spec_path = tmp_path / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    env = worker_child_env(env_extra)
    for name_ in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RANKFORGE_TRAINER_THREADS", "RANKFORGE_TRAINER_OMP_THREADS",
                  "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):  # fmt: skip
        if name_ not in env_extra:
            env.pop(name_, None)
    completed = subprocess.run(
        [sys.executable, "-m", "trainer.run", str(spec_path)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=240, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )  # fmt: skip
    done = [e for e in parse_events(completed.stdout) if e["event"] == "done"]
    assert done, completed.stderr[-3000:]
    return done[0]["metrics"]


def test_a_child_uses_the_cpus_it_may_run_on_not_one_thread(tmp_path, generator):
    policy, prompts = generator
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs to tell a CPU-sized thread count from a fixed 1")

    metrics = _child_metrics(tmp_path, "all-cpus", policy, prompts, env_extra={})
    assert metrics["system/threads"] == threads.cpu_budget() > 1
    assert metrics["system/processes"] == 1
    # the job's time by phase, in its metrics
    for phase in ("load_model", "read_prompts", "generate", "total"):
        assert metrics[f"time/{phase}_s"] >= 0
    assert metrics["time/load_model_s"] + metrics["time/generate_s"] <= metrics["time/total_s"]

    pinned = _child_metrics(tmp_path, "one-cpu", policy, prompts, env_extra={}, cpus={cpus[0]})
    assert pinned["system/threads"] == 1 and pinned["system/cpus"] == 1

    chosen = _child_metrics(tmp_path, "setting", policy, prompts, env_extra={"RANKFORGE_TRAINER_THREADS": "3"},
                            cpus={cpus[0]})  # fmt: skip
    assert chosen["system/threads"] == 3


# --- tokenization cache and length-grouped batches ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return load_tokenizer(tiny.reward)


def test_tokenized_rows_are_cached_per_rows_tokenizer_and_max_length(tmp_path, tokenizer):
    rows = keyword_pairs(24, seed=9)
    first, hit = encode_all(rows, tokenizer, 64, ("chosen", "rejected"), tmp_path)
    assert not hit and len(list(tmp_path.glob("*.json"))) == 1
    again, hit = encode_all(rows, tokenizer, 64, ("chosen", "rejected"), tmp_path)
    assert hit and again == first
    encoded, fit = encode_rows(rows, tokenizer, 64, ("chosen", "rejected"), tmp_path)
    assert fit.from_cache and encoded == encode_rows(rows, tokenizer, 64, ("chosen", "rejected"), None)[0]

    _, hit = encode_all(rows, tokenizer, 32, ("chosen", "rejected"), tmp_path)  # another max_length
    assert not hit
    changed = [dict(rows[0], chosen=rows[0]["chosen"] + " indeed")] + rows[1:]  # another row's content
    _, hit = encode_all(changed, tokenizer, 64, ("chosen", "rejected"), tmp_path)
    assert not hit
    assert len(list(tmp_path.glob("*.json"))) == 3 and not list(tmp_path.glob(".*.tmp"))

    for path in tmp_path.glob("*.json"):  # a garbled entry is recomputed, never trusted
        path.write_text("{not json")
    recomputed, hit = encode_all(rows, tokenizer, 64, ("chosen", "rejected"), tmp_path)
    assert not hit and recomputed == first


def test_training_batches_group_pairs_of_similar_length(tmp_path, tiny, tokenizer):
    """Short and long pairs mixed at random: the reward trainer's batches pad far less than random batches would,
    and every pair is still seen once per epoch."""
    rows = keyword_pairs(96, seed=13)
    for index, row in enumerate(rows):
        if index % 3 == 0:
            row["prompt"] = ("Some long context sentence. " * 12) + row["prompt"]
    args = parse_params("reward", {"per_device_train_batch_size": 8, "max_length": 128})
    model = load_reward(tiny.reward, tokenizer=tokenizer)
    trainer = reward.make_trainer(model, tokenizer, rows, args, tmp_path / "scratch", seed=0)

    def padded_tokens() -> tuple[int, int]:
        """(tokens in the padded batches of one epoch, sequences seen)."""
        tokens = sequences = 0
        for batch in trainer.get_train_dataloader():
            tokens += batch["input_ids"].numel()
            sequences += batch["input_ids"].shape[0]
        return tokens, sequences

    pairs = trainer.train_dataset.to_list()
    assert trainer.row_lengths == [max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in pairs]
    grouped, sequences = padded_tokens()
    assert sequences == 2 * len(pairs)  # chosen and rejected of every pair, once
    trainer.row_lengths = None  # the sampler TRL would use
    random_batches, sequences = padded_tokens()
    assert sequences == 2 * len(pairs)
    assert grouped < 0.8 * random_batches, (grouped, random_batches)
