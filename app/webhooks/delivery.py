"""The worker's webhook sender: `deliver_due(worker_id)` is an idle task, called each idle loop.

1. Cut batches: every endpoint's pending `judgment.created` items become one message, at most one a
   `webhooks_batch_seconds` per endpoint.
2. Claim due messages under a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so many workers share the work).
3. Send them outside any transaction, a few endpoints in parallel, checking the resolved address first.
4. Record each outcome: success; or a retry with exponential backoff; or give up after the last attempt.
   An endpoint failing `webhooks_disable_after` times in a row is disabled and the admin told.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import delete, or_, select

from app.config import get_settings
from app.db import is_sqlite, session_scope
from app.errors import SecretKeyError
from app.models import WebhookDelivery, WebhookEndpoint, utcnow
from app.webhooks.service import (
    UnsafeWebhookUrl,
    disable_endpoint,
    headers_for,
    new_msg_id,
    resolve_checked,
    signing_secret,
)

log = logging.getLogger("rankforge.webhooks")

CLAIM_LIMIT = 50
BATCH_LIMIT = 1000
"""Judgments per judgment.created message; more wait for the next one."""
MAX_BACKOFF_SECONDS = 6 * 3600
PARALLEL = 8


def body_bytes(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def cut_batches() -> int:
    """Turn pending judgment items into batch messages; returns how many messages were made."""
    settings = get_settings()
    now = utcnow()
    made = 0
    with session_scope(write=True) as db:
        waiting = select(WebhookDelivery.endpoint_id).where(
            WebhookDelivery.batch_item, WebhookDelivery.status == "pending").distinct()  # fmt: skip
        query = select(WebhookEndpoint).where(
            WebhookEndpoint.enabled, WebhookEndpoint.id.in_(waiting),
            or_(WebhookEndpoint.last_batch_at.is_(None),
                WebhookEndpoint.last_batch_at <= now - timedelta(seconds=settings.webhooks_batch_seconds)),
        ).order_by(WebhookEndpoint.id)  # fmt: skip
        if not is_sqlite(db):
            query = query.with_for_update(skip_locked=True)
        for endpoint in db.scalars(query).all():
            items = list(db.scalars(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.batch_item,
                                              WebhookDelivery.status == "pending")
                .order_by(WebhookDelivery.id).limit(BATCH_LIMIT)
            ))  # fmt: skip
            if not items:
                continue
            message = WebhookDelivery(
                endpoint_id=endpoint.id, event_type="judgment.created", msg_id=new_msg_id(), batch_item=False,
                status="pending", attempts=0, next_attempt_at=now, created_at=now,
                payload={"type": "judgment.created", "timestamp": now.isoformat(),
                         "data": {"count": len(items), "judgments": [item.payload for item in items]}},
            )  # fmt: skip
            db.add(message)
            db.flush()
            for item in items:
                item.status, item.batch_id = "batched", message.id
            endpoint.last_batch_at = now
            made += 1
    return made


def _claim(worker_id: str) -> list[dict]:
    settings = get_settings()
    now = utcnow()
    with session_scope(write=True) as db:
        query = (
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.status == "pending", ~WebhookDelivery.batch_item,
                   WebhookDelivery.next_attempt_at <= now, WebhookEndpoint.enabled,
                   or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now))
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(CLAIM_LIMIT)
        )  # fmt: skip
        if not is_sqlite(db):
            query = query.with_for_update(of=WebhookDelivery, skip_locked=True)
        claimed = []
        for delivery, endpoint in db.execute(query).all():
            try:
                secret = signing_secret(endpoint)
            except SecretKeyError as error:  # a server misconfiguration: keep the message, say why, retry later
                delivery.last_error = str(error.detail)
                delivery.next_attempt_at = now + timedelta(seconds=backoff_seconds(delivery.attempts + 1))
                continue
            delivery.lease_until = now + timedelta(seconds=settings.webhooks_timeout_seconds + 30)
            delivery.attempts += 1
            claimed.append({"id": delivery.id, "endpoint_id": endpoint.id, "url": endpoint.url,
                            "secret": secret, "msg_id": delivery.msg_id, "body": body_bytes(delivery.payload),
                            "attempts": delivery.attempts})  # fmt: skip
    return claimed


def _send(client: httpx.Client, item: dict) -> dict:
    started = time.perf_counter()
    outcome = {"id": item["id"], "status_code": None, "error": None}
    try:
        # Resolved and checked again at send time (DNS may point somewhere else by now), and the connection goes
        # to the address checked, not to a second lookup (no DNS rebinding between the check and the send):
        # the URL carries the IP, the Host header and TLS's SNI (so certificate checks) the name.
        addresses = resolve_checked(item["url"])
        url = httpx.URL(item["url"])
        timestamp = int(time.time())
        headers = headers_for(item["secret"], item["msg_id"], timestamp, item["body"]) | {"host": url.netloc.decode()}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        response = client.post(url.copy_with(host=addresses[0]), content=item["body"], headers=headers,
                               extensions=extensions)  # fmt: skip
        outcome["status_code"] = response.status_code
        if not 200 <= response.status_code < 300:
            outcome["error"] = f"HTTP {response.status_code}: {response.text[:300]}"
    except UnsafeWebhookUrl as error:
        outcome["error"] = str(error.detail)
    except httpx.HTTPError as error:
        outcome["error"] = f"{error.__class__.__name__}: {error}"[:500]
    outcome["latency_ms"] = int((time.perf_counter() - started) * 1000)
    return outcome


def backoff_seconds(attempts: int) -> float:
    """Exponential, from the base, with up to 20% jitter so retries of many messages spread out."""
    base = get_settings().webhooks_retry_base_seconds
    delay = min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))
    return delay * (1 + random.random() * 0.2)


def _record(outcomes: list[dict]) -> None:
    settings = get_settings()
    now = utcnow()
    with session_scope(write=True) as db:
        for outcome in outcomes:
            delivery = db.get(WebhookDelivery, outcome["id"])
            if delivery is None:  # its endpoint was deleted meanwhile
                continue
            endpoint = db.get(WebhookEndpoint, delivery.endpoint_id)
            delivery.lease_until = None
            delivery.last_status_code, delivery.last_latency_ms = outcome["status_code"], outcome["latency_ms"]
            delivery.last_error = outcome["error"]
            if outcome["error"] is None:
                delivery.status, delivery.delivered_at = "succeeded", now
                endpoint.consecutive_failures = 0
                continue
            if delivery.attempts >= settings.webhooks_max_attempts:
                delivery.status = "failed"
            else:
                delivery.next_attempt_at = now + timedelta(seconds=backoff_seconds(delivery.attempts))
            endpoint.consecutive_failures += 1
            if endpoint.enabled and endpoint.consecutive_failures >= settings.webhooks_disable_after:
                disable_endpoint(db, endpoint, f"Disabled after {endpoint.consecutive_failures} failed attempts in "
                                               f"a row; last: {outcome['error']}")  # fmt: skip


RETENTION_DAYS = 30
"""Delivered, given-up and batched rows older than this are deleted (the log shows the recent past)."""
_last_prune = {"at": 0.0}


def _anything_due() -> bool:
    """A read-only look first, so an idle sender never takes SQLite's write lock (the raters need it)."""
    now = utcnow()
    with session_scope() as db:
        return bool(db.scalar(select(
            select(WebhookDelivery.id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.status == "pending", WebhookEndpoint.enabled,
                   or_(WebhookDelivery.batch_item, WebhookDelivery.next_attempt_at <= now))
            .limit(1).exists()
        )))  # fmt: skip


def prune(now=None) -> int:
    """Delete finished rows older than RETENTION_DAYS; returns how many."""
    cutoff = (now or utcnow()) - timedelta(days=RETENTION_DAYS)
    with session_scope(write=True) as db:
        result = db.execute(delete(WebhookDelivery).where(
            WebhookDelivery.status.in_(("succeeded", "failed", "batched")), WebhookDelivery.created_at < cutoff))  # fmt: skip
        return result.rowcount or 0


def deliver_due(worker_id: str) -> int:
    """Send what is due; returns how many messages were attempted."""
    if time.monotonic() - _last_prune["at"] > 3600:
        _last_prune["at"] = time.monotonic()
        prune()
    if not _anything_due():
        return 0
    cut_batches()
    claimed = _claim(worker_id)
    if not claimed:
        return 0
    settings = get_settings()
    timeout = httpx.Timeout(settings.webhooks_timeout_seconds)
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        if len(claimed) == 1:
            outcomes = [_send(client, claimed[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(PARALLEL, len(claimed))) as pool:
                outcomes = list(pool.map(lambda item: _send(client, item), claimed))
    _record(outcomes)
    failed = sum(1 for o in outcomes if o["error"])
    if failed:
        log.info("webhooks: %s sent, %s failed (worker %s)", len(outcomes) - failed, failed, worker_id)
    return len(outcomes)


def run_in_background(worker_id: str, every: float = 0.5) -> tuple[threading.Thread, threading.Event]:
    """A daemon thread calling `deliver_due` every `every` seconds until the returned event is set: webhooks keep
    flowing while the worker's main loop runs a long training job. Errors are logged and retried."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                sent = deliver_due(worker_id)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the sender
                log.exception("webhook delivery failed")
                sent = 0
            if not sent:
                stop.wait(every)

    thread = threading.Thread(target=loop, name="webhooks", daemon=True)
    thread.start()
    return thread, stop
