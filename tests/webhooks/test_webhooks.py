"""Webhooks end to end: events queued in the outbox, sent by the worker's `deliver_due` to a real HTTP
receiver in this test, signatures checked by an independent implementation of Standard Webhooks below."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from app.models import AuditLog, WebhookDelivery
from app.webhooks.delivery import deliver_due
from tests.helpers import import_lines, make_project, native_lines

try:  # the worker is moving to app/worker.py
    from app.worker import run_one
except ImportError:  # pragma: no cover
    from app.jobs.worker import run_one


# --- an independent Standard Webhooks verifier (https://www.standardwebhooks.com, "Verifying") ----------------
def verify(secret: str, headers: dict, body: bytes, tolerance: int = 300) -> dict:
    msg_id, ts, signatures = headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
    assert abs(time.time() - int(ts)) <= tolerance, "timestamp outside the tolerance"
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest())
    for signature in signatures.split(" "):
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return json.loads(body)
    raise AssertionError("no valid v1 signature")


class Receiver:
    """A tiny HTTP server thread recording what it gets; answers with the queued status codes, then 200."""

    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(receiver.delay)
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def set_env(monkeypatch, **values):
    from app.config import get_settings

    for name, value in values.items():
        monkeypatch.setenv(f"RANKFORGE_{name.upper()}", str(value))
    get_settings.cache_clear()


@pytest.fixture
def receiver(monkeypatch, db_url):
    set_env(monkeypatch, webhooks_allow_private="true", webhooks_retry_base_seconds=0.05)
    server = Receiver()
    yield server
    server.close()
    from app.config import get_settings

    monkeypatch.undo()
    get_settings.cache_clear()


def add_endpoint(client, admin, url, events, **extra):
    response = client.post("/api/v1/webhooks", json={"url": url, "events": events} | extra, headers=admin["headers"])
    assert response.status_code == 201, response.text
    return response.json()


def drain(until, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliver_due("test-worker")
        if until():
            return
        time.sleep(0.05)
    raise AssertionError("deliveries did not arrive in time")


def test_signed_events_for_datasets_jobs_and_models(client, users, receiver, tmp_path):
    admin = users.create("admin", "admin")
    project = make_project(client, admin)
    endpoint = add_endpoint(client, admin, receiver.url, ["dataset.ready", "job.succeeded", "model.registered"],
                            project_id=project["slug"])  # fmt: skip
    secret = endpoint["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    shown = client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=admin["headers"]).json()
    assert "secret" not in shown and shown["secret_hint"].startswith("whsec_")

    import_lines(client, admin, project["id"], native_lines(3, ranking=True))
    snapshot = client.post(f"/api/v1/projects/{project['id']}/datasets", json={"format": "pairs"},
                           headers=admin["headers"]).json()  # fmt: skip
    assert run_one("w") == snapshot["job_id"]
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    client.post("/api/v1/models", json={"name": "m1", "path": str(tmp_path / "ckpt"), "kind": "policy",
                                        "project_id": project["id"]}, headers=admin["headers"])  # fmt: skip
    drain(lambda: len(receiver.received) >= 3)
    bodies = [verify(secret, headers, body) for headers, body in receiver.received]
    by_type = {b["type"]: b for b in bodies}
    assert set(by_type) == {"dataset.ready", "job.succeeded", "model.registered"}
    assert by_type["dataset.ready"]["data"]["id"] == snapshot["id"] and by_type["dataset.ready"]["data"]["sha256"]
    assert by_type["job.succeeded"]["data"]["id"] == snapshot["job_id"]
    assert by_type["model.registered"]["data"]["name"] == "m1"
    assert len({h["webhook-id"] for h, _ in receiver.received}) == 3
    # A wrong secret does not verify.
    with pytest.raises(AssertionError):
        verify("whsec_" + base64.b64encode(b"x" * 24).decode(), *receiver.received[0])
    log = client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries", headers=admin["headers"]).json()
    assert {d["status"] for d in log} == {"succeeded"} and all(d["last_latency_ms"] is not None for d in log)
    page = client.get(f"/webhooks/{endpoint['id']}", headers=admin["headers"] | {"accept": "text/html"})
    assert page.status_code == 200 and "dataset.ready" in page.text


def test_retries_with_backoff_after_two_500s_keep_the_message_id(client, users, receiver, db, tmp_path):
    admin = users.create("admin", "admin")
    endpoint = add_endpoint(client, admin, receiver.url, ["*"])
    receiver.statuses = [500, 500]
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    client.post("/api/v1/models", json={"name": "m1", "path": str(tmp_path / "ckpt"), "kind": "policy"},
                headers=admin["headers"])  # fmt: skip
    assert deliver_due("w") == 1
    assert deliver_due("w") == 0  # backing off: not due yet
    drain(lambda: len(receiver.received) == 3)
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert len(ids) == 1
    for headers, body in receiver.received:
        verify(endpoint["secret"], headers, body)
    delivery = db.scalar(select(WebhookDelivery).execution_options(populate_existing=True))
    assert delivery.status == "succeeded" and delivery.attempts == 3 and delivery.last_status_code == 200


def test_judgment_created_is_batched_at_most_once_a_second(client, users, receiver):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(8))
    endpoint = add_endpoint(client, admin, receiver.url, ["judgment.created", "comparison.completed"])

    def rate(n):
        for _ in range(n):
            task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
            ids = [o["id"] for o in task["options"]]
            response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                                   json={"ranking": [[ids[0]], [ids[1]]]}, headers=rater["headers"])  # fmt: skip
            assert response.status_code == 201

    rate(5)
    deliver_due("w")
    batches = [verify(endpoint["secret"], h, b) for h, b in receiver.received]
    judgments = [b for b in batches if b["type"] == "judgment.created"]
    assert len(judgments) == 1 and judgments[0]["data"]["count"] == 5
    assert len({j["id"] for j in judgments[0]["data"]["judgments"]}) == 5
    assert sum(b["type"] == "comparison.completed" for b in batches) == 5  # overlap 1: each judgment completes one
    rate(3)
    started = time.monotonic()
    deliver_due("w")
    if time.monotonic() - started < 0.9:  # still within the second since the last batch
        assert sum(json.loads(b)["type"] == "judgment.created" for _, b in receiver.received) == 1
    drain(lambda: sum(json.loads(b)["type"] == "judgment.created" for _, b in receiver.received) == 2)
    second = [json.loads(b) for _, b in receiver.received if json.loads(b)["type"] == "judgment.created"][1]
    assert second["data"]["count"] == 3


def test_private_and_non_http_urls_are_refused(client, users, monkeypatch, db_url):
    admin = users.create("admin", "admin")
    set_env(monkeypatch, webhooks_allow_private="false")
    for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "http://169.254.169.254/latest/meta-data",
                "http://10.1.2.3/", "http://[::1]/", "http://192.168.0.10/", "ftp://example.com/x",
                "file:///etc/passwd", "http://user:pw@127.0.0.1/"):  # fmt: skip
        response = client.post("/api/v1/webhooks", json={"url": url, "events": ["*"]}, headers=admin["headers"])
        assert response.status_code == 422, (url, response.text)
    response = client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "events": ["nope"]},
                           headers=admin["headers"])  # fmt: skip
    assert response.status_code == 422
    set_env(monkeypatch, webhooks_allow_private="true")
    assert client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]},
                       headers=admin["headers"]).status_code == 201  # fmt: skip
    from app.config import get_settings

    monkeypatch.undo()
    get_settings.cache_clear()


def test_send_time_check_and_disable_after_repeated_failures(client, users, receiver, monkeypatch, db, tmp_path):
    admin = users.create("admin", "admin")
    endpoint = add_endpoint(client, admin, receiver.url, ["model.registered"])
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    client.post("/api/v1/models", json={"name": "m1", "path": str(tmp_path / "ckpt"), "kind": "policy"},
                headers=admin["headers"])  # fmt: skip
    # The setting is turned off after the endpoint was saved: the send-time check refuses loopback.
    set_env(monkeypatch, webhooks_allow_private="false", webhooks_retry_base_seconds=0.01, webhooks_disable_after=3)
    drain(lambda: client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=admin["headers"]).json()["enabled"] is False)
    assert receiver.received == []
    log = client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries", headers=admin["headers"]).json()
    assert log[0]["attempts"] == 3 and "private" in log[0]["last_error"]
    assert db.scalar(select(AuditLog).where(AuditLog.action == "webhook.disabled")) is not None
    page = client.get(f"/webhooks/{endpoint['id']}", headers=admin["headers"] | {"accept": "text/html"})
    assert "disabled-notice" in page.text
    # Re-enabled with private addresses allowed, a manual redelivery goes through with the same id.
    set_env(monkeypatch, webhooks_allow_private="true", webhooks_retry_base_seconds=0.01, webhooks_disable_after=3)
    client.patch(f"/api/v1/webhooks/{endpoint['id']}", json={"enabled": True}, headers=admin["headers"])
    redo = client.post(f"/api/v1/webhooks/deliveries/{log[0]['id']}/redeliver", headers=admin["headers"])
    assert redo.status_code == 200 and redo.json()["status"] == "pending"
    drain(lambda: len(receiver.received) == 1)
    assert receiver.received[0][0]["webhook-id"] == log[0]["msg_id"]


def test_only_admins_manage_webhooks(client, users):
    engineer = users.create("eng", "engineer")
    assert client.get("/api/v1/webhooks", headers=engineer["headers"]).status_code == 403


def test_background_sender_and_pruning(client, users, receiver, db, tmp_path):
    from datetime import timedelta

    from app.models import utcnow
    from app.webhooks.delivery import prune, run_in_background

    admin = users.create("admin", "admin")
    add_endpoint(client, admin, receiver.url, ["model.registered"])
    thread, stop = run_in_background("bg", every=0.05)
    try:
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "config.json").write_text("{}")
        client.post("/api/v1/models", json={"name": "m1", "path": str(tmp_path / "ckpt"), "kind": "policy"},
                    headers=admin["headers"])  # fmt: skip
        deadline = time.monotonic() + 10
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(receiver.received) == 1
    finally:
        stop.set()
        thread.join(5)
    assert prune() == 0  # delivered just now: kept
    assert prune(utcnow() + timedelta(days=31)) == 1
    assert db.scalar(select(WebhookDelivery).execution_options(populate_existing=True)) is None


def test_pages_show_the_secret_once_and_redeliver(client, users, receiver):
    admin = users.create("admin", "admin")
    html = admin["headers"] | {"accept": "text/html"}
    created = client.post("/webhooks", data={"url": receiver.url, "events": ["dataset.ready", "job.failed"],
                                             "project": "", "description": "ci"}, headers=html)  # fmt: skip
    assert created.status_code == 201 and "whsec_" in created.text and "this once" in created.text
    endpoint = client.get("/api/v1/webhooks", headers=admin["headers"]).json()[0]
    assert endpoint["events"] == ["dataset.ready", "job.failed"]
    listing = client.get("/webhooks", headers=html)
    assert receiver.url in listing.text and "this once" not in listing.text
    refused = client.post("/webhooks", data={"url": "ftp://example.com/", "events": ["job.failed"]}, headers=html)
    assert refused.status_code == 422 and "http" in refused.text
    off = client.post(f"/webhooks/{endpoint['id']}/enabled", data={}, headers=html, follow_redirects=False)
    assert off.status_code == 303
    assert client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=admin["headers"]).json()["enabled"] is False


def test_outbox_follows_the_transaction_and_project_scoping(client, users, receiver, db):
    from sqlalchemy import func

    from app.db import session_scope
    from app.webhooks.service import emit

    admin = users.create("admin", "admin")
    one, two = make_project(client, admin, name="One"), make_project(client, admin, name="Two")
    scoped = add_endpoint(client, admin, receiver.url, ["dataset.ready"], project_id=one["id"])
    everywhere = add_endpoint(client, admin, receiver.url, ["*"])
    with session_scope(write=True) as session:
        assert emit(session, "dataset.ready", one["id"], {"id": 1}) == 2
        assert emit(session, "dataset.ready", two["id"], {"id": 2}) == 1  # the global endpoint only
        assert emit(session, "job.failed", one["id"], {"id": 3}) == 1
    with pytest.raises(RuntimeError), session_scope(write=True) as session:
        emit(session, "dataset.ready", one["id"], {"id": 4})
        raise RuntimeError("the change that caused the event is rolled back, and the event with it")
    rows = db.execute(select(WebhookDelivery.endpoint_id, func.count()).group_by(WebhookDelivery.endpoint_id)).all()
    assert dict(rows) == {scoped["id"]: 1, everywhere["id"]: 3}
