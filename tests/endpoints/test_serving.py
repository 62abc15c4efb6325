"""Serving a registered local version from the worker: a `serve` job started from the version's page runs
`transformers serve` as its child on a free port, registers the endpoint VERSION-served while it runs (a generate
job uses it), and cancel stops the server and marks the endpoint unavailable; a killed worker's server dies with it
and its job is retried or failed by the queue's usual rules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import httpx
import pytest

from app.worker import run_one
from tests.conftest import ROOT
from tests.endpoints.test_generate import generate, job_of, project_with_prompts


@pytest.fixture
def staff(users):
    return {"admin": users.create("root", "admin"), "engineer": users.create("eve", "engineer")}


@pytest.fixture
def quick_heartbeat(monkeypatch):
    from app.config import get_settings

    monkeypatch.setenv("RANKFORGE_WORKER_HEARTBEAT_SECONDS", "0.3")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def register_local(client, who, path, name="tiny-local") -> int:
    response = client.post("/api/v1/models", json={"name": name, "path": str(path), "kind": "policy"},
                           headers=who["headers"])  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_for_endpoint(client, who, name, job_id, timeout=240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/endpoints/{name}", headers=who["headers"])
        if response.status_code == 200 and response.json()["endpoint"]["unavailable"] is None:
            return response.json()
        job = job_of(client, who, job_id)
        if job["status"] in ("failed", "cancelled"):
            pytest.fail(f"the serve job ended: {job['error']}")
        time.sleep(0.3)
    pytest.fail(f"{name} was not served within {timeout:g} s")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_a_serve_job_from_the_version_page_serves_until_cancelled(client, staff, tiny_checkpoint, quick_heartbeat):
    from app.config import get_settings
    from tests.auth.test_auth import form_csrf, login

    engineer = staff["engineer"]
    version_id = register_local(client, engineer, tiny_checkpoint)
    assert login(client, "eve", engineer["password"]).status_code in (302, 303)
    page = client.get(f"/models/{version_id}")
    assert page.status_code == 200 and 'id="serving"' in page.text and "tiny-local-served" in page.text
    started = client.post(f"/models/{version_id}/serve", data={"csrf_token": form_csrf(page.text),
                                                               "server": "transformers", "device": "cpu"},
                          follow_redirects=False)  # fmt: skip
    assert started.status_code == 303, started.text
    job_id = int(started.headers["location"].rsplit("/", 1)[1])
    assert job_of(client, engineer, job_id)["kind"] == "serve"
    again = client.post("/api/v1/endpoints/serve", json={"version": "tiny-local"}, headers=engineer["headers"])
    assert again.status_code == 409  # one serve job per version at a time

    worker = threading.Thread(target=run_one, args=("w-serve",), daemon=True)
    worker.start()
    try:
        endpoint = wait_for_endpoint(client, engineer, "tiny-local-served", job_id)["endpoint"]
        assert endpoint["served_by_job_id"] == job_id and endpoint["model"] == str(tiny_checkpoint)
        listed = httpx.get(f"{endpoint['base_url']}/v1/models", timeout=10).json()
        assert str(tiny_checkpoint) in [m["id"] for m in listed["data"]]
        server_pid = int((get_settings().data_dir.resolve() / "jobs" / str(job_id) / "child.pid").read_text())
        page = client.get(f"/models/{version_id}").text
        assert "Stop serving" in page and endpoint["base_url"] in page

        pid = project_with_prompts(client, staff["admin"], ["Say hi.", "Say bye."])  # the worker's endpoint at work
        gen = generate(client, engineer, pid, "tiny-local-served", num_completions=2, max_new_tokens=2)
        assert run_one("w-gen") == gen and job_of(client, engineer, gen)["status"] == "succeeded"

        assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=engineer["headers"]).status_code == 200
        worker.join(60)
        assert not worker.is_alive()
    finally:
        if worker.is_alive():
            client.post(f"/api/v1/jobs/{job_id}/cancel", headers=engineer["headers"])
            worker.join(60)
    assert job_of(client, engineer, job_id)["status"] == "cancelled"
    assert not alive(server_pid)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{endpoint['base_url']}/v1/models", timeout=5)
    stopped = client.get("/api/v1/endpoints/tiny-local-served", headers=engineer["headers"]).json()["endpoint"]
    assert stopped["unavailable"] == f"serve job {job_id} was cancelled"
    late = generate(client, engineer, pid, "tiny-local-served", num_completions=1)
    assert run_one("w-gen") == late
    failed = job_of(client, engineer, late)
    assert failed["status"] == "failed" and "unavailable: serve job" in failed["error"]
    assert "unavailable: serve job" in client.get(f"/models/{version_id}").text


@pytest.mark.only_db("sqlite")
def test_a_killed_worker_takes_its_server_along_and_the_job_is_retried(client, staff, tiny_checkpoint, db):
    from app.config import get_settings
    from app.db import session_scope
    from app.jobs.service import recover_stale
    from app.models import Job, utcnow

    engineer = staff["engineer"]
    register_local(client, engineer, tiny_checkpoint)
    response = client.post("/api/v1/endpoints/serve", json={"version": "tiny-local", "params": {"device": "cpu"}},
                           headers=engineer["headers"])  # fmt: skip
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--once"], cwd=ROOT,
                              env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_endpoint(client, engineer, "tiny-local-served", job_id)
        server_pid = int((get_settings().data_dir.resolve() / "jobs" / str(job_id) / "child.pid").read_text())
        assert alive(server_pid)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    deadline = time.monotonic() + 30
    while alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(server_pid)  # no orphan server: it died with the worker
    endpoint = client.get("/api/v1/endpoints/tiny-local-served", headers=engineer["headers"]).json()["endpoint"]
    assert endpoint["unavailable"] is None  # the job still reads as running until its heartbeat goes stale

    with session_scope(write=True) as session:
        session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(hours=1)
    with session_scope(write=True) as session:
        assert recover_stale(session, 30) == [job_id]
    job = job_of(client, engineer, job_id)
    assert job["status"] == "queued" and "stopped heartbeating" in job["message"]
    endpoint = client.get("/api/v1/endpoints/tiny-local-served", headers=engineer["headers"]).json()["endpoint"]
    assert endpoint["unavailable"] == f"the serve job {job_id} running its server is queued"
    with session_scope(write=True) as session:  # the last attempt's worker dies too: failed
        row = session.get(Job, job_id)
        row.status, row.attempts, row.heartbeat_at = "running", row.max_attempts, utcnow() - timedelta(hours=1)
    with session_scope(write=True) as session:
        recover_stale(session, 30)
    assert job_of(client, engineer, job_id)["status"] == "failed"
    endpoint = client.get("/api/v1/endpoints/tiny-local-served", headers=engineer["headers"]).json()["endpoint"]
    assert endpoint["unavailable"] == f"the serve job {job_id} running its server is failed"
