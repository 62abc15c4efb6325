"""`rankforge models endpoint` and `rankforge models serve` (a registered local version served by `transformers
serve` and registered as an endpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT, free_port
from tests.endpoints.conftest import SECRET


def test_models_endpoint_reads_the_key_from_stdin_and_never_prints_it(db_url, fault_server, db):
    from app.cli import app
    from app.models import ModelEndpoint

    fault_server.reset()
    result = CliRunner().invoke(app, ["models", "endpoint", "oracle", "--base-url", fault_server.url, "--model",
                                      fault_server.model, "--api-key-stdin", "--max-concurrency", "2"],
                                input=SECRET + "\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and json.loads(result.output)["endpoint"]["has_api_key"] is True
    assert fault_server.asked()[-1]["auth"] == f"Bearer {SECRET}"
    assert db.query(ModelEndpoint).one().max_concurrency == 2
    wrong = CliRunner().invoke(app, ["models", "endpoint", "other", "--base-url", fault_server.url, "--model", "nope"])
    assert wrong.exit_code == 1 and "nope" in wrong.output


@pytest.mark.only_db("sqlite")
def test_models_serve_starts_transformers_serve_and_registers_it(db_url, tiny_checkpoint, db):
    from app.db import session_scope
    from app.models import ModelEndpoint, ModelVersion
    from app.registry.service import register_version

    with session_scope(db_url, write=True) as session:
        register_version(session, "tiny-local", tiny_checkpoint, "policy")
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "models", "serve", "tiny-local", "--port", str(port),
                                "--device", "cpu"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        line = process.stdout.readline()  # printed once the server lists the model and the endpoint is registered
        assert line, process.stderr.read()[-3000:]
        started = json.loads(line)
        assert started["endpoint"] == "tiny-local-served" and started["model"] == str(tiny_checkpoint)
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert str(tiny_checkpoint) in [m["id"] for m in listed["data"]]
        db.rollback()
        version = db.query(ModelVersion).filter_by(name="tiny-local-served").one()
        assert db.query(ModelEndpoint).filter_by(model_version_id=version.id).one().base_url == f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server child went with it
        try:
            os.kill(started["pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the model server outlived `rankforge models serve`")
    db.rollback()
    endpoint = db.query(ModelEndpoint).filter_by(model_version_id=version.id).one()
    assert endpoint.unavailable == "rankforge models serve stopped"  # marked on exit
