"""CLI output a newcomer can read (issue 27): `train KIND --help` lists that kind's parameters only, a finished job
ends in one summary line, `export` takes the page's filters and prints a table, lists have headers and slugs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from app.cli import app, job_summary
from tests.conftest import ROOT
from tests.helpers import native_lines

runner = CliRunner()


def cli(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def help_of(*args: str) -> str:
    """The help as a user sees it: `rankforge ...` in a process of its own (main() picks the kind's epilog)."""
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=os.environ | {"COLUMNS": "200"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_train_kind_help_lists_that_kinds_parameters_only():
    from trainer.params import DEFAULTS

    reward, ppo = help_of("train", "reward", "--help"), help_of("train", "ppo", "--help")
    assert "margin_coefficient=" in reward and "cliprange=" not in reward
    assert "cliprange=" in ppo and "margin_coefficient=" not in ppo
    assert all(f"{name}=" in reward for name in DEFAULTS["reward"])
    general = help_of("train", "--help")
    assert "rankforge train KIND --help" in general and "margin_coefficient" not in general and "cliprange" not in general


def _import(tmp_path, slug: str, n: int) -> None:
    data = tmp_path / f"{slug}.jsonl"
    data.write_bytes(native_lines(n, ranking=True, prefix=slug))
    cli("import", slug, str(data))  # rankings in a plain import are imported judgments


def test_export_takes_the_pages_filters_and_prints_a_table(users, tmp_path):
    users.create("root", "admin")
    cli("project", "create", "Helpful", "--slug", "helpful")
    _import(tmp_path, "helpful", 8)
    shown = cli("export", "helpful").stdout.strip().splitlines()
    header = next(i for i, line in enumerate(shown) if line.startswith("DATASET"))
    assert shown[header].split() == ["DATASET", "FORMAT", "TRAIN", "TEST", "SHA256", "PATH"]
    dataset, fmt, train, test = shown[header + 1].split()[:4]
    assert fmt == "pairs" and int(train) + int(test) == 8
    # One vote per comparison: at least two votes matches nothing, and the message says what to do.
    assert "Loosen the filters" in cli("export", "helpful", "--min-votes", "2", code=1).output
    # Judgments are dated today: a window in the past matches nothing, today's day matches all of them.
    assert cli("export", "helpful", "--to", "2000-01-01", code=1).exit_code == 1
    from datetime import date

    today = date.today().isoformat()
    summary = json.loads(cli("export", "helpful", "--from", today, "--json").stdout.strip().splitlines()[-1])
    assert summary["rows"]["train"] + summary["rows"]["test"] == 8
    assert cli("export", "helpful", "--from", "2999-01-01", code=1).exit_code == 1
    kept = json.loads(cli("export", "helpful", "--min-agreement", "0.5", "--exclude-gold", "--exclude-unsafe",
                          "--json").stdout.strip().splitlines()[-1])  # fmt: skip
    assert kept["rows"]["train"] + kept["rows"]["test"] == 8


def test_lists_have_headers_and_slugs_and_a_job_ends_in_a_summary(users, tmp_path):
    users.create("root", "admin")
    cli("project", "create", "Helpful", "--slug", "helpful")
    _import(tmp_path, "helpful", 4)
    cli("export", "helpful", "--json")
    jobs = cli("job", "list").stdout.splitlines()
    assert jobs[0].split() == ["ID", "KIND", "PROJECT", "STATUS", "PROGRESS", "CREATED", "MESSAGE"]
    assert jobs[1].split()[1:4] == ["export", "helpful", "succeeded"]

    from app.db import session_scope
    from app.models import ModelVersion

    with session_scope(write=True) as db:
        version = ModelVersion(name="hh-reward-8", kind="reward", path=str(tmp_path / "m"), job_id=7,
                               metrics={"eval/accuracy": 0.5561, "eval/margin": 0.2, "train/loss": 0.3})  # fmt: skip
        db.add(version)
        db.flush()
        version_id = version.id
    models = cli("models", "list").stdout.splitlines()
    assert models[0].split()[:3] == ["ID", "KIND", "NAME"] and "HELD-OUT" in models[0]
    assert "hh-reward-8" in models[1] and "accuracy 0.556" in models[1]

    state = {"id": 7, "kind": "reward", "status": "succeeded", "message": "succeeded",
             "result": {"model_version_id": version_id, "metrics": {}}}  # fmt: skip
    assert job_summary(state) == "reward job 7 succeeded: registered hh-reward-8, eval accuracy 0.556, eval margin 0.2"
    generated = {"id": 8, "kind": "generate", "status": "succeeded", "message": "",
                 "result": {"completion_ids": [1, 2, 3, 4], "comparison_ids": [5, 6]}}  # fmt: skip
    assert job_summary(generated) == "generate job 8 succeeded: 4 completions in 2 new comparisons"
