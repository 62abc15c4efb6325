"""Fixtures for trainer tests: real tiny models and real snapshot directories, built once per session.

The synthetic task (trainer.tiny.keyword_pairs): chosen completions contain "please", rejected ones a filler
word in its place, so a model that learns shows it on held-out rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from trainer.data import unpair
from trainer.spec import JobSpec
from trainer.tiny import (
    build_tiny_policy,
    build_tiny_reward,
    keyword_pairs,
    keyword_texts,
    train_tokenizer,
    write_snapshot,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class JobResult:
    """What a `python -m trainer.run` child did: exit code, parsed JSON events, stderr text."""

    returncode: int
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]

    @property
    def done(self) -> dict[str, Any]:
        done = self.of("done")
        assert done, (
            f"no done event (exit {self.returncode}); last events: {self.events[-3:]}\n{self.stderr[-3000:]}"
        )
        return done[0]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    # No OMP_NUM_THREADS: the child sizes its threads as the worker's do (trainer.threads: one for tiny models).
    return env


def parse_events(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def run_job(
    tmp_path: Path, spec: dict[str, Any], *, env: dict[str, str] | None = None, timeout: int = 240
) -> JobResult:
    """Write spec.json and run the trainer on it in a child process, as the worker does."""
    spec_path = tmp_path / f"spec-{spec['kind']}.json"
    spec_path.write_text(json.dumps(spec))
    completed = subprocess.run(
        [sys.executable, "-m", "trainer.run", str(spec_path)],
        cwd=ROOT,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return JobResult(completed.returncode, parse_events(completed.stdout), completed.stderr)


def start_job(tmp_path: Path, spec: dict[str, Any]) -> tuple[subprocess.Popen, Path]:
    """Start the trainer child without waiting (for cancel tests)."""
    spec_path = tmp_path / f"spec-{spec['kind']}.json"
    spec_path.write_text(json.dumps(spec))
    child = subprocess.Popen(
        [sys.executable, "-m", "trainer.run", str(spec_path)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return child, spec_path


def stop(child: subprocess.Popen) -> None:
    """Make sure a child we started is gone (by its pid, never by name)."""
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)


def parsed(spec: dict[str, Any]) -> JobSpec:
    """The JobSpec a kind's main receives (what trainer.run builds from spec.json)."""
    return JobSpec.from_dict(spec)


def spec_for(kind: str, output_dir: Path, **fields: Any) -> dict[str, Any]:
    spec = {
        "kind": kind,
        "job_id": 1,
        "base_model": None,
        "reward_model": None,
        "dataset_path": None,
        "prompts_path": None,
        "output_dir": str(output_dir),
        "params": {},
        "launcher": "python",
        "seed": 0,
    }
    spec.update(fields)
    return spec


@dataclass
class TinyWorld:
    """Tiny models and snapshots on disk for one test session."""

    root: Path
    policy: Path
    reward: Path
    pairs: Path  # standard (string) pairs snapshot: train + test
    chat_pairs: Path  # conversational pairs snapshot
    kto: Path  # unpaired kto snapshot, rows grouped by comparison as an export lists them


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyWorld:
    root = tmp_path_factory.mktemp("tiny")
    train, test = keyword_pairs(128, seed=1), keyword_pairs(48, seed=2)
    chat_train, chat_test = (
        keyword_pairs(64, seed=3, conversational=True),
        keyword_pairs(24, seed=4, conversational=True),
    )
    tokenizer = train_tokenizer(keyword_texts(train + test + chat_train + chat_test), vocab_size=512)
    kto_train, kto_test = unpair(keyword_pairs(64, seed=5)), unpair(keyword_pairs(24, seed=6))
    return TinyWorld(
        root=root,
        policy=build_tiny_policy(root / "policy", tokenizer, seed=0),
        reward=build_tiny_reward(root / "reward", tokenizer, seed=0),
        pairs=write_snapshot(root / "snapshot-pairs", {"train": train, "test": test}),
        chat_pairs=write_snapshot(root / "snapshot-chat", {"train": chat_train, "test": chat_test}),
        kto=write_snapshot(root / "snapshot-kto", {"train": kto_train, "test": kto_test}, fmt="kto"),
    )
