"""Webhook endpoints, the delivery outbox, and Standard Webhooks signing. Never commits.

`emit` writes delivery rows in the caller's transaction (an outbox): an event is queued exactly when the
change that caused it commits, and sending happens later in the worker (`app.webhooks.delivery.deliver_due`),
so a slow or failing receiver never slows the request that caused the event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from urllib.parse import urlsplit

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from app.api import get_or_404
from app.config import get_settings
from app.crypto import decrypt_secret, encrypt_secret
from app.errors import Conflict, SecretKeyError, Unprocessable
from app.models import AuditLog, Project, User, WebhookDelivery, WebhookEndpoint, utcnow
from app.webhooks.schemas import DeliveryOut, WebhookOut, WebhookWithSecret

EVENT_TYPES = (
    "judgment.created",
    "comparison.completed",
    "dataset.ready",
    "dataset.failed",
    "job.succeeded",
    "job.failed",
    "model.registered",
    "round.finished",
    "judge.gate_failed",
)
BATCHED_EVENTS = frozenset({"judgment.created"})
"""Written as batch items; the worker sends them many to a message, at most one message a second."""


class UnsafeWebhookUrl(Unprocessable):
    """This webhook URL is not allowed."""


# --- signing (https://www.standardwebhooks.com) ----------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def signing_secret(endpoint: WebhookEndpoint) -> str:
    """The endpoint's `whsec_...` secret; stored encrypted (app.crypto), so a copied database reveals none."""
    return decrypt_secret(endpoint.secret)


def secret_hint(endpoint: WebhookEndpoint) -> str:
    try:
        return signing_secret(endpoint)[:10] + "…"
    except SecretKeyError:  # the list stays readable; sending tells the admin what is wrong
        return "(cannot be decrypted: check RANKFORGE_SECRET_KEY)"


def new_msg_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the secret's base64-decoded bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers_for(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "Rankforge-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


# --- server-side request forgery -------------------------------------------------------------------------------


IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
TEREDO = ipaddress.ip_network("2001::/32")
SIXTOFOUR = ipaddress.ip_network("2002::/16")
SITE_LOCAL = ipaddress.ip_network("fec0::/10")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, where one does: IPv4-mapped, IPv4-compatible, 6to4, NAT64."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in NAT64_WELL_KNOWN or ip in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def non_global_reason(address: str) -> str | None:
    """Why this address is not a globally routable one (in any of its encodings), or None if it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a zone index (fe80::1%eth0) is link-local anyway
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in TEREDO:  # the client address is obfuscated and the relay is whoever answers: never a receiver
            return "a Teredo tunnel address"
        if ip in NAT64_LOCAL_USE or ip in SITE_LOCAL:
            return "a local-use address"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = non_global_reason(str(embedded))
            return f"{reason} ({embedded}, embedded in {ip})" if reason else None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "a private or reserved address"
    return None


def _numeric_host(hostname: str) -> bool:
    """Labels that are all decimal, octal or hex numbers: an IPv4 address in a short or odd encoding
    (`2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1`); no DNS name looks like that (a top-level domain is never
    numeric)."""
    labels = hostname.rstrip(".").split(".")
    return all(label.isdigit() or (label[:2].lower() == "0x" and all(c in "0123456789abcdefABCDEF"
                                                                       for c in label[2:])) for label in labels)


def _canonical_ipv4(hostname: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(hostname)) == hostname
    except ValueError:
        return False


def resolve_checked(url: str, *, allow_private: bool | None = None) -> list[str]:
    """The URL's addresses, after refusing anything but http(s) and (unless allowed) non-public addresses.

    Called when an endpoint is saved and again before every send (DNS may have changed since)."""
    if allow_private is None:
        allow_private = get_settings().webhooks_allow_private
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise UnsafeWebhookUrl(f"Not a URL: {error}") from error
    if parts.scheme not in ("http", "https"):
        raise UnsafeWebhookUrl("A webhook URL must start with http:// or https://.")
    if not parts.hostname:
        raise UnsafeWebhookUrl("A webhook URL needs a host.")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl("A webhook URL may not carry a user name or password.")
    if _numeric_host(parts.hostname) and not _canonical_ipv4(parts.hostname):
        raise UnsafeWebhookUrl(f"{parts.hostname!r} is an IPv4 address in an unusual form: write it as a.b.c.d.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:  # the name does not resolve here: say what to check, not the errno
        raise UnsafeWebhookUrl(
            f"Cannot find the host {parts.hostname!r}: its name does not resolve from this server. Check the "
            "spelling, and that this server can reach a DNS resolver (a receiver on a private network needs "
            "RANKFORGE_WEBHOOKS_ALLOW_PRIVATE=true too)."
        ) from error
    except (OSError, ValueError) as error:
        raise UnsafeWebhookUrl(f"Cannot resolve {parts.hostname!r}: {error}") from error
    addresses = sorted({info[4][0] for info in infos})
    if not allow_private:
        blocked = [f"{a}: {reason}" for a in addresses if (reason := non_global_reason(a))]
        if blocked:
            raise UnsafeWebhookUrl(
                f"{parts.hostname} resolves to an address that is not globally routable ({'; '.join(blocked)}); "
                "set RANKFORGE_WEBHOOKS_ALLOW_PRIVATE=true to allow receivers on a private network."
            )
    return addresses


# --- endpoints -------------------------------------------------------------------------------------------------


def _audit(db: Session, actor: User | None, action: str, endpoint_id: int, **details) -> None:
    db.add(AuditLog(actor_id=actor.id if actor else None, action=action, target_type="webhook",
                    target_id=endpoint_id, details=details))  # fmt: skip


def check_events(events: list[str]) -> list[str]:
    events = sorted(set(events))
    if not events:
        raise Unprocessable(f"Choose at least one event: {', '.join(EVENT_TYPES)} (or '*' for all).")
    unknown = [e for e in events if e != "*" and e not in EVENT_TYPES]
    if unknown:
        raise Unprocessable(f"Unknown events {unknown}; known: {', '.join(EVENT_TYPES)} (or '*').")
    return ["*"] if "*" in events else events


def create_endpoint(db: Session, url: str, events: list[str], *, project: Project | None = None,
                    description: str = "", actor: User | None = None) -> WebhookEndpoint:  # fmt: skip
    """A new endpoint; its `secret` is returned to the caller once (the API shows it only on creation)."""
    resolve_checked(url)
    endpoint = WebhookEndpoint(url=url, events=check_events(events), project_id=project.id if project else None,
                               description=description, secret=encrypt_secret(new_secret()), enabled=True, consecutive_failures=0,
                               created_by_id=actor.id if actor else None)  # fmt: skip
    db.add(endpoint)
    db.flush()
    _audit(db, actor, "webhook.create", endpoint.id, url=url, events=endpoint.events, project_id=endpoint.project_id)
    return endpoint


def get_endpoint(db: Session, endpoint_id: int) -> WebhookEndpoint:
    return get_or_404(db, WebhookEndpoint, endpoint_id, "webhook endpoint")


def list_endpoints(db: Session, *, project_id: int | None = None, limit: int | None = None,
                   offset: int = 0) -> list[WebhookEndpoint]:  # fmt: skip
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.id)
    if project_id is not None:
        query = query.where(WebhookEndpoint.project_id == project_id)
    return list(db.scalars(query.offset(offset).limit(limit)))


def update_endpoint(db: Session, endpoint: WebhookEndpoint, changes: dict, actor: User | None) -> WebhookEndpoint:
    if changes.get("url") is not None:
        resolve_checked(changes["url"])
        endpoint.url = changes["url"]
    if changes.get("events") is not None:
        endpoint.events = check_events(changes["events"])
    if changes.get("description") is not None:
        endpoint.description = changes["description"]
    if changes.get("enabled") is not None:
        endpoint.enabled = bool(changes["enabled"])
        if endpoint.enabled:
            endpoint.consecutive_failures, endpoint.disabled_reason = 0, None
    _audit(db, actor, "webhook.update", endpoint.id, changes=sorted(k for k, v in changes.items() if v is not None))
    return endpoint


def rotate_secret(db: Session, endpoint: WebhookEndpoint, actor: User | None) -> str:
    secret = new_secret()
    endpoint.secret = encrypt_secret(secret)
    _audit(db, actor, "webhook.rotate_secret", endpoint.id)
    return secret


def delete_endpoint(db: Session, endpoint: WebhookEndpoint, actor: User | None) -> None:
    _audit(db, actor, "webhook.delete", endpoint.id, url=endpoint.url)
    db.delete(endpoint)


def disable_endpoint(db: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    """Stop sending to an endpoint that keeps failing; the audit log and the endpoint's page tell the admin."""
    endpoint.enabled, endpoint.disabled_reason = False, reason[:500]
    _audit(db, None, "webhook.disabled", endpoint.id, url=endpoint.url, reason=reason[:500])


# --- events ----------------------------------------------------------------------------------------------------


def listeners(db: Session, project_id: int | None) -> list[tuple[int, list]]:
    """(id, events) of the enabled endpoints of this project and the global ones: one indexed read."""
    query = select(WebhookEndpoint.id, WebhookEndpoint.events).where(WebhookEndpoint.enabled)
    if project_id is None:
        query = query.where(WebhookEndpoint.project_id.is_(None))
    else:
        query = query.where(or_(WebhookEndpoint.project_id == project_id, WebhookEndpoint.project_id.is_(None)))
    return [tuple(row) for row in db.execute(query)]


def emit(db: Session, event_type: str, project_id: int | None, payload: dict, *,
         endpoints: list[tuple[int, list]] | None = None) -> int:  # fmt: skip
    """Queue `event_type` for every enabled endpoint that wants it (the project's and the global ones), in the
    caller's transaction. Returns how many deliveries were queued. Cheap when no endpoint listens: one indexed
    read of a small table (none when the caller passes the `listeners` it read already)."""
    if endpoints is None:
        endpoints = listeners(db, project_id)
    targets = [endpoint_id for endpoint_id, events in endpoints if "*" in events or event_type in events]
    if not targets:
        return 0
    now = utcnow()
    batched = event_type in BATCHED_EVENTS
    body = payload if batched else {"type": event_type, "timestamp": now.isoformat(), "data": payload}
    db.add_all(
        WebhookDelivery(endpoint_id=endpoint_id, event_type=event_type, msg_id=new_msg_id(), payload=body,
                        batch_item=batched, status="pending", attempts=0, next_attempt_at=now, created_at=now)
        for endpoint_id in targets
    )  # fmt: skip
    return len(targets)


def emit_judgment(db: Session, judgment, comparison) -> None:
    """judgment.created, and comparison.completed when this judgment filled the comparison. On the rating loop's
    path: one read of the listening endpoints, nothing more when there are none."""
    endpoints = listeners(db, judgment.project_id)
    if not endpoints:
        return
    emit(db, "judgment.created", judgment.project_id, {
        "id": judgment.id, "assignment_id": judgment.assignment_id, "comparison_id": judgment.comparison_id,
        "project_id": judgment.project_id, "rater_id": judgment.rater_id, "ranking": judgment.ranking,
        "attributes": judgment.attributes, "flags": judgment.flags, "source": judgment.source,
        "created_at": judgment.created_at.isoformat() if judgment.created_at else None,
    }, endpoints=endpoints)  # fmt: skip
    if not comparison.is_gold and comparison.n_judgments >= comparison.required:
        emit(db, "comparison.completed", comparison.project_id, {
            "id": comparison.id, "project_id": comparison.project_id, "judgments": comparison.n_judgments,
            "required": comparison.required,
        }, endpoints=endpoints)  # fmt: skip


def redeliver(db: Session, delivery: WebhookDelivery, actor: User | None) -> WebhookDelivery:
    """Send a message again (same webhook-id, so receivers can deduplicate), now."""
    if delivery.batch_item:
        raise Conflict("This is one judgment of a batch; redeliver its batch message instead.")
    delivery.status, delivery.next_attempt_at, delivery.lease_until = "pending", utcnow(), None
    _audit(db, actor, "webhook.redeliver", delivery.endpoint_id, delivery_id=delivery.id)
    return delivery


def get_delivery(db: Session, delivery_id: int) -> WebhookDelivery:
    return get_or_404(db, WebhookDelivery, delivery_id, "webhook delivery")


def deliveries_query(endpoint_id: int) -> Select:
    """An endpoint's messages (batch items hidden: their batch message stands for them), newest first."""
    return (select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id, ~WebhookDelivery.batch_item)
            .order_by(WebhookDelivery.id.desc()))  # fmt: skip


def list_deliveries(db: Session, endpoint_id: int, *, limit: int = 50, offset: int = 0) -> list[WebhookDelivery]:
    return list(db.scalars(deliveries_query(endpoint_id).offset(offset).limit(limit)))


def endpoint_json(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict:
    """The endpoint as the API and its page show it (its shape: WebhookOut; WebhookWithSecret when the answer
    carries the secret, once)."""
    fields = {name: getattr(endpoint, name) for name in WebhookOut.model_fields if name != "secret_hint"}
    fields["secret_hint"] = secret_hint(endpoint)
    if with_secret:
        return WebhookWithSecret.model_validate(fields | {"secret": signing_secret(endpoint)}).model_dump(mode="json")
    return WebhookOut.model_validate(fields).model_dump(mode="json")


def delivery_json(delivery: WebhookDelivery) -> dict:
    return DeliveryOut.model_validate(delivery).model_dump(mode="json")
