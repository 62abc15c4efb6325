"""Model registry: API, CLI (models add/list/init-tiny, train --wait), tiny models built in a child process."""

from __future__ import annotations

import json
import threading
import time

from typer.testing import CliRunner

from app.cli import app as cli
from app.worker import run_one
from tests.helpers import import_lines, make_project, native_lines

runner = CliRunner()


def test_models_api_registers_local_checkpoints_and_checks_them(client, users, tmp_path):
    engineer = users.create("eve", "engineer")
    annotator = users.create("anna", "annotator")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    body = {"name": "my-policy", "path": str(checkpoint), "kind": "policy"}
    created = client.post("/api/v1/models", json=body, headers=engineer["headers"])
    assert created.status_code == 201, created.text
    assert {"id", "name", "kind", "path", "job_id", "dataset_id", "metrics"} <= set(created.json())
    assert client.post("/api/v1/models", json=body, headers=engineer["headers"]).status_code == 409
    no_config = body | {"name": "other", "path": str(tmp_path)}
    response = client.post("/api/v1/models", json=no_config, headers=engineer["headers"])
    assert response.status_code == 422 and "config.json" in response.json()["detail"]
    wrong_kind = body | {"name": "x", "kind": "critic"}
    assert client.post("/api/v1/models", json=wrong_kind, headers=engineer["headers"]).status_code == 422
    listed = client.get("/api/v1/models", headers=engineer["headers"]).json()
    assert [m["name"] for m in listed] == ["my-policy"]
    assert client.get("/api/v1/models", headers=annotator["headers"]).status_code == 403


def test_cli_models_add_list_and_train_queue_a_job(client, users, tmp_path):
    admin = users.create("root", "admin")
    project = make_project(client, admin, slug="cli")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    result = runner.invoke(
        cli, ["models", "add", "base-v1", str(checkpoint), "--kind", "policy", "-p", "cli"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["project_id"] == project["id"]
    listing = runner.invoke(cli, ["models", "list"])
    assert "base-v1" in listing.output
    queued = runner.invoke(
        cli, ["train", "dpo", "--project", "cli", "--param", "beta=0.3", "--param", "loss_type=ipo"]
    )
    assert queued.exit_code == 0, queued.output
    job = json.loads(queued.output)
    assert job["status"] == "queued" and job["params"]["beta"] == 0.3 and job["params"]["loss_type"] == "ipo"
    bad = runner.invoke(cli, ["train", "dpo", "--project", "cli", "--param", "beta=high"])
    assert bad.exit_code == 1 and "beta" in bad.output
    needs_reward = runner.invoke(cli, ["train", "ppo", "--project", "cli"])
    assert needs_reward.exit_code == 1 and "reward model" in needs_reward.output
    help_text = runner.invoke(cli, ["train", "--help"], terminal_width=200).output
    assert "train KIND --help" in help_text  # each kind's parameters: tests/cli/test_newcomer_cli.py


def test_init_tiny_then_train_generate_with_wait(client, users):
    admin = users.create("root", "admin")
    project = make_project(client, admin, slug="tiny")
    assert import_lines(client, admin, project["id"], native_lines(6)).status_code == 200
    result = runner.invoke(cli, ["models", "init-tiny", "--project", "tiny"])
    assert result.exit_code == 0, result.output
    versions = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [v["kind"] for v in versions] == ["policy", "reward"] and all(
        v["project_id"] == project["id"] for v in versions
    )

    done = threading.Event()

    def worker():
        while not done.is_set():
            if run_one("cli-worker") is None:
                time.sleep(0.2)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        args = ["train", "generate", "--project", "tiny", "--wait", "--json", "--param", "num_completions=2",
                "--param", "max_new_tokens=4", "--param", "max_prompts=2"]  # fmt: skip
        waited = runner.invoke(cli, args)
    finally:
        done.set()
        thread.join(60)
    assert waited.exit_code == 0, waited.output
    *_, last_json, summary = waited.output.strip().splitlines()
    state = json.loads(last_json)
    assert summary == f"generate job {state['id']} succeeded: 4 completions in 2 new comparisons"  # one line to read
    assert state["status"] == "succeeded" and len(state["result"]["completion_ids"]) == 4
    assert len(state["result"]["comparison_ids"]) == 2  # one pair of fresh samples per prompt
