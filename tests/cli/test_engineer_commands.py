"""`rankforge project|dataset|job ...`: tables for people, --json for scripts (in-process via typer's runner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import app
from tests.helpers import native_lines

try:  # the worker's composition root (was app.jobs.worker)
    from app.worker import run_one
except ImportError:  # pragma: no cover
    from app.jobs.worker import run_one

runner = CliRunner()


def cli(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def cli_json(*args: str):
    return json.loads(cli(*args, "--json").stdout)


@pytest.fixture
def people(users):
    return users.create("root", "admin"), users.create("ann", "annotator"), users.create("bob", "annotator")


def test_project_create_list_show_update(people, tmp_path):
    guidelines = tmp_path / "guidelines.md"
    guidelines.write_text("# Prefer the helpful answer\n")
    made = cli_json("project", "create", "Helpfulness", "--slug", "helpful", "--mode", "rank", "--overlap", "2",
                    "--guidelines-file", str(guidelines), "--attribute", "helpful:1:7", "--attribute",
                    "harmless:1:5:Harmlessness", "--member", "ann", "--members-only")  # fmt: skip
    assert made["slug"] == "helpful" and made["mode"] == "rank" and made["overlap"] == 2
    assert [a["name"] for a in made["attributes"]] == ["helpful", "harmless"]
    assert made["attributes"][1]["label"] == "Harmlessness" and made["attributes"][1]["max"] == 5
    assert made["members"] == ["ann"] and made["members_only"] and made["guidelines"].startswith("# Prefer")

    listing = cli("project", "list").stdout
    assert listing.splitlines()[0].split() == ["ID", "SLUG", "NAME", "MODE", "OVERLAP", "STATUS"]
    assert "helpful" in listing
    assert [p["slug"] for p in cli_json("project", "list")] == ["helpful"]
    shown = cli("project", "show", "helpful").stdout
    assert "helpful 1-7" in shown and "ann (members only)" in shown

    guidelines.write_text("# Prefer the honest answer\n")
    updated = cli_json("project", "update", str(made["id"]), "--overlap", "3", "--guidelines-file", str(guidelines),
                       "--member", "ann", "--member", "bob", "--open", "--attribute", "honest:1:3")  # fmt: skip
    assert updated["overlap"] == 3 and updated["guideline_version"] == 2 and updated["members"] == ["ann", "bob"]
    assert not updated["members_only"] and [a["name"] for a in updated["attributes"]] == ["honest"]

    assert "No project" in cli("project", "show", "nope", code=1).output
    assert "No users" in cli("project", "update", "helpful", "--member", "ghost", code=1).output
    assert cli("project", "create", "Dup", "--slug", "helpful", code=1).exit_code == 1
    assert cli("project", "create", "Bad", "--mode", "sideways", code=2).exit_code == 2


def test_dataset_and_job_commands(people, tmp_path):
    cli("project", "create", "Exports", "--slug", "exports")
    data = tmp_path / "data.jsonl"
    data.write_bytes(native_lines(6, ranking=True))
    cli("import", "exports", str(data))
    # Judgments exist now: the scales can no longer change.
    assert "judgments" in cli("project", "update", "exports", "--attribute", "x:1:3", code=1).output

    from app.datasets.service import request_snapshot
    from app.db import session_scope
    from app.projects.service import get_project

    with session_scope(write=True) as db:
        snapshot_id = request_snapshot(db, get_project(db, "exports"), {"format": "pairs"}, None).id
    job_id = run_one("cli-test")
    assert job_id is not None

    datasets = cli_json("dataset", "list", "--project", "exports")
    assert [d["id"] for d in datasets] == [snapshot_id] and datasets[0]["status"] == "ready"
    assert "TRAIN/TEST" in cli("dataset", "list").stdout
    assert cli_json("dataset", "show", str(snapshot_id))["sha256"]
    assert "sha256" in cli("dataset", "show", str(snapshot_id)).stdout
    out = tmp_path / "out"
    copied = cli_json("dataset", "download", str(snapshot_id), "--out", str(out))
    assert "manifest.json" in copied["files"] and (out / "train.jsonl").is_file()

    jobs = cli_json("job", "list", "--project", "exports")
    assert [j["id"] for j in jobs] == [job_id] and jobs[0]["status"] == "succeeded"
    assert "export" in cli("job", "list", "--status", "succeeded").stdout
    assert cli_json("job", "show", str(job_id))["result"]["dataset_id"] == snapshot_id
    assert cli_json("job", "wait", str(job_id))["status"] == "succeeded"

    with session_scope(write=True) as db:
        pending = request_snapshot(db, get_project(db, "exports"), {"format": "pairs"}, None)
        queued, pending_id = pending.job_id, pending.id
    assert "is building" in cli("dataset", "download", str(pending_id), "--out", str(out), code=1).output
    assert "queued" in cli("job", "list").stdout
    assert cli_json("job", "cancel", str(queued))["status"] == "cancelled"
    assert cli("job", "wait", str(queued), code=1).exit_code == 1
    assert "already" in cli("job", "cancel", str(queued), code=1).output
