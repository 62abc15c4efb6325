"""The API key of an endpoint appears nowhere but encrypted in its own column: not in any API response or page of a
full flow (endpoint saved, generation, a generation whose every request fails, judging, rating, export, webhooks),
not in an export file, a log line (the worker's logging, a failed job's log and traceback), the audit log, a webhook
payload, any other database row, or a backup (its manifest and its database dump); nor the value of the environment
variable an endpoint names instead."""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from app.worker import run_one
from tests.endpoints.conftest import SECRET
from tests.endpoints.test_judge import add_judge, judge_job, polite_rows, rate_politely, setup_project
from tests.helpers import import_lines, make_project


def test_the_key_appears_nowhere(client, users, fault_server, db, db_url, tmp_path, caplog, app, fast_retries,
                                 monkeypatch):  # fmt: skip
    from app.backup import backup
    from app.config import get_settings
    from app.models import Base

    caplog.set_level(logging.DEBUG)
    fault_server.reset()  # only this flow's requests are checked below
    world = {"admin": users.create("root", "admin"), "engineer": users.create("eve", "engineer"),
             "rater": users.create("ann", "annotator")}  # fmt: skip
    seen: list[tuple[str, bytes]] = []
    request = client.request

    def recording(method, url, *args, **kwargs):
        response = request(method, url, *args, **kwargs)
        seen.append((f"{method} {url}", response.content))
        return response

    client.request = recording
    admin = world["admin"]["headers"]
    hook = client.post("/api/v1/webhooks", json={"url": "https://example.com/hook", "events": ["*"]}, headers=admin)
    pid = setup_project(client, world, polite_rows(6))
    created = client.post("/api/v1/endpoints", json={"name": "oracle", "base_url": fault_server.url, "model":
                                                     fault_server.model, "api_key": SECRET}, headers=admin)  # fmt: skip
    assert created.status_code == 201, created.text
    client.patch("/api/v1/endpoints/oracle", json={"api_key": SECRET, "timeout_seconds": 30}, headers=admin)
    client.post("/api/v1/endpoints/oracle/check", headers=admin)
    monkeypatch.setenv("RANKFORGE_TEST_ENDPOINT_KEY", SECRET)  # the key named as the worker's environment variable
    named = client.post("/api/v1/endpoints", json={"name": "oracle-env", "base_url": fault_server.url, "model":
                                                   fault_server.model, "api_key_env": "RANKFORGE_TEST_ENDPOINT_KEY"},
                        headers=admin)  # fmt: skip
    assert named.status_code == 201 and named.json()["endpoint"]["api_key_env"] == "RANKFORGE_TEST_ENDPOINT_KEY"
    # a generation whose every request fails: the failure reasons, the job's error, log and traceback
    failing = make_project(client, world["admin"], name="Failing")["id"]
    rows = [{"prompt": f"[500] fail {i}", "completions": [{"text": t, "model": "m"} for t in "xy"]} for i in range(2)]
    assert import_lines(client, world["admin"], failing, "\n".join(json.dumps(r) for r in rows).encode()).status_code == 200
    broken = client.post("/api/v1/jobs", json={"kind": "generate", "project_id": failing, "base_model": "oracle-env",
                                               "params": {"num_completions": 1}}, headers=admin).json()  # fmt: skip
    assert run_one("w1") == broken["id"]
    assert client.get(f"/api/v1/jobs/{broken['id']}", headers=admin).json()["status"] == "failed"
    client.get(f"/jobs/{broken['id']}", headers=admin)
    job = client.post("/api/v1/jobs", json={"kind": "generate", "project_id": pid, "base_model": "oracle",
                                            "params": {"num_completions": 2}}, headers=admin).json()  # fmt: skip
    assert run_one("w1") == job["id"]
    rate_politely(client, world["rater"], pid)
    judge_job(client, world, pid, add_judge(client, world, pid, "oracle-judge", "oracle"))
    export = client.post(f"/api/v1/projects/{pid}/datasets", json={"format": "pairs", "filters": {"sources": ["human",
                         "ai"]}}, headers=admin).json()  # fmt: skip
    assert run_one("w1") == export["job_id"]
    dataset = client.get(f"/api/v1/datasets/{export['id']}", headers=admin).json()
    for name in dataset["files"]:
        assert client.get(f"/api/v1/datasets/{export['id']}/files/{name}", headers=admin).status_code == 200
    # every parameterless GET route, as an admin, then the pages and resources of this flow
    for route in app.routes:
        if "GET" in getattr(route, "methods", ()) and "{" not in route.path and not route.path.startswith(("/static", "/logout")):
            client.get(route.path, headers=admin)
    for path in (f"/api/v1/jobs/{job['id']}", f"/jobs/{job['id']}", f"/api/v1/jobs/{job['id']}/metrics",
                 f"/projects/{pid}", f"/projects/{pid}/judges", f"/api/v1/projects/{pid}/judges", "/models/endpoints",
                 f"/api/v1/projects/{pid}/stats", f"/api/v1/projects/{pid}/leaderboard", "/api/v1/endpoints/oracle",
                 f"/api/v1/webhooks/{hook.json().get('id')}", f"/webhooks/{hook.json().get('id')}"):  # fmt: skip
        client.get(path, headers=admin)
    assert len(seen) > 40
    for where, content in seen:
        assert SECRET.encode() not in content, where
    # the server received it, as a bearer token only
    assert {r["auth"] for r in fault_server.asked("Which response is better")} == {f"Bearer {SECRET}"}
    for record in caplog.records:
        assert SECRET not in record.getMessage() and SECRET not in str(record.args), record.getMessage()
    # no database row holds it in the clear (the endpoint's own column holds it encrypted)
    db.rollback()
    for table in Base.metadata.sorted_tables:
        for row in db.execute(sa.select(table)).mappings():
            assert SECRET not in json.dumps(dict(row), default=str), table.name
    for path in get_settings().data_dir.rglob("*"):
        if path.is_file() and path.name != "secret.key":
            assert SECRET.encode() not in path.read_bytes(), path
    target = tmp_path / "backup"
    backup(db_url, get_settings().data_dir, target)
    assert SECRET not in (target / "manifest.json").read_text()
    for path in target.rglob("*"):  # the database dump holds the key only encrypted
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
