"""`rankforge export PROJECT --out DIR` as a user runs it: a real subprocess on the demo data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from app.datasets.snapshot_files import verify_snapshot
from app.db import session_scope
from app.demo.setup import seed_demo
from app.judgments.schemas import JudgmentIn
from app.judgments.service import submit
from app.models import Comparison, Judgment, Project, User
from app.tasks.service import claim_next
from tests.conftest import ROOT

JUDGMENTS_PER_RATER = 6


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"RANKFORGE_DATABASE_URL": db_url, "RANKFORGE_DATA_DIR": os.environ["RANKFORGE_DATA_DIR"]}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _rate_demo(db_url: str) -> None:
    """Both demo raters rank the lower completion id first on their next few tasks."""
    for username in ("ann1", "ann2"):
        for _ in range(JUDGMENTS_PER_RATER):
            with session_scope(db_url) as db:
                project = db.scalar(select(Project).where(Project.slug == "demo"))
                rater = db.scalar(select(User).where(User.username == username))
                assignment = claim_next(db, project, rater)
                assert assignment is not None
                comparison = db.get(Comparison, assignment.comparison_id)
                first, second = sorted(comparison.completion_ids)
                submit(db, assignment.id, rater, JudgmentIn(ranking=[[first], [second]]))


def test_export_demo_to_a_directory(db_url, tmp_path):
    seed_demo(db_url)
    empty = _cli(db_url, "export", "demo", "--out", str(tmp_path / "empty"))
    assert empty.returncode == 1
    assert "match no judgments" in empty.stderr
    assert not (tmp_path / "empty").exists()

    _rate_demo(db_url)
    # The demo prompts are chats: forced into plain strings they cannot be exported, and the error says what to do.
    plain = _cli(db_url, "export", "demo", "--standard", "--out", str(tmp_path / "plain"))
    assert plain.returncode == 1 and "conversational" in plain.stderr and "Traceback" not in plain.stderr
    assert not (tmp_path / "plain").exists()

    # With no flag ("auto") the chats come out as message lists.
    out = tmp_path / "export"
    done = _cli(db_url, "export", "demo", "--format", "pairs", "--out", str(out), "--test-fraction", "0.3",
                "--hf-datasets", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])

    assert {"manifest.json", "train.jsonl", "test.jsonl", "train.parquet", "test.parquet", "hf"} <= {
        p.name for p in out.iterdir()
    }
    manifest = verify_snapshot(out)  # the copy is complete: every file matches the manifest
    assert manifest["sha256"] == summary["sha256"]
    assert manifest["project"]["slug"] == "demo" and manifest["format"] == "pairs"
    assert manifest["conversational"] is True and manifest["spec"]["conversational"] is None  # auto, resolved
    rows = [json.loads(line) for split in ("train", "test")
            for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]  # fmt: skip
    with session_scope(db_url) as db:
        project_id = db.scalar(select(Project.id).where(Project.slug == "demo"))
        judged = db.scalar(select(func.count(func.distinct(Judgment.comparison_id)))
                           .where(Judgment.project_id == project_id))  # fmt: skip
    # Two completions per demo comparison and every rater agreed: one pair per judged comparison.
    assert len(rows) == judged == summary["rows"]["train"] + summary["rows"]["test"]
    assert all(row["chosen_id"] < row["rejected_id"] and row["agreement"] == 1.0 for row in rows)
    assert all(isinstance(row["prompt"], list) and row["chosen"][0]["role"] == "assistant" for row in rows)

    import datasets

    reloaded = datasets.load_from_disk(str(out / "hf"))
    assert reloaded["train"].num_rows + reloaded["test"].num_rows == len(rows)
    assert Path(summary["path"]).is_dir()
