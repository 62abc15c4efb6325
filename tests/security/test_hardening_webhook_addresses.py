"""Webhook destinations (issue 21, point 7): every address that is not globally routable is refused, whatever
its encoding, when the endpoint is saved and again when a message is sent (the DNS answer is checked too)."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import select

from app.models import WebhookDelivery, utcnow
from app.webhooks.delivery import deliver_due
from app.webhooks.service import UnsafeWebhookUrl, non_global_reason, resolve_checked
from tests.webhooks.test_webhooks import set_env

REFUSED_URLS = [
    # IPv4 in short, decimal, octal and hex forms (all 127.0.0.1)
    "http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://0177.0.0.1/", "http://0x7f000001/",
    "http://017700000001/", "http://10.1/",
    # IPv6 encodings of non-global IPv4
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[::ffff:10.0.0.1]/",  # IPv4-mapped
    "http://[::127.0.0.1]/", "http://[::7f00:1]/", "http://[::a9fe:a9fe]/",  # IPv4-compatible
    "http://[2002:7f00:1::1]/", "http://[2002:a9fe:a9fe::]/", "http://[2002:c0a8:1::1]/",  # 6to4
    "http://[64:ff9b::7f00:1]/", "http://[64:ff9b::10.0.0.1]/", "http://[64:ff9b:1::808:808]/",  # NAT64
    "http://[2001::1]/", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    # plain non-global addresses
    "http://[::1]/", "http://[fe80::1]/", "http://[fc00::1]/", "http://[fec0::1]/", "http://[::]/",
    "http://0.0.0.0/", "http://100.64.0.1/", "http://169.254.169.254/", "http://192.0.2.1/", "http://224.0.0.1/",
    "http://[2001:db8::1]/", "http://[ff02::1]/",
]

GLOBAL_ADDRESSES = ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_non_global_destinations_are_refused_in_every_encoding(url):
    with pytest.raises(UnsafeWebhookUrl):
        resolve_checked(url, allow_private=False)


@pytest.mark.parametrize("address", GLOBAL_ADDRESSES)
def test_global_addresses_pass_in_their_encodings(address):
    assert non_global_reason(address) is None


def _fake_dns(monkeypatch, answers: dict[str, str]):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            family = socket.AF_INET6 if ":" in answers[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_refused_at_save_through_the_api_including_dns_answers(client, users, monkeypatch, db_url):
    admin = users.create("admin", "admin")
    set_env(monkeypatch, webhooks_allow_private="false")
    _fake_dns(monkeypatch, {"sixtofour.example": "2002:7f00:1::1", "nat64.example": "64:ff9b::a00:1"})
    for url in ("http://[2002:7f00:1::1]/", "http://0x7f.1/", "http://2130706433/", "http://sixtofour.example/",
                "http://nat64.example/"):  # fmt: skip
        response = client.post("/api/v1/webhooks", json={"url": url, "events": ["*"]}, headers=admin["headers"])
        assert response.status_code == 422, (url, response.text)


def test_refused_at_send_when_the_dns_answer_changed(client, users, monkeypatch, db_url, db):
    admin = users.create("admin", "admin")
    set_env(monkeypatch, webhooks_allow_private="false", webhooks_retry_base_seconds=0.01)
    _fake_dns(monkeypatch, {"hook.example": "93.184.216.34"})
    created = client.post("/api/v1/webhooks", json={"url": "http://hook.example/h", "events": ["*"]},
                          headers=admin["headers"])  # fmt: skip
    assert created.status_code == 201, created.text
    db.add(WebhookDelivery(endpoint_id=created.json()["id"], event_type="job.succeeded", msg_id="msg_send_check",
                           payload={"type": "job.succeeded", "data": {}}, batch_item=False, status="pending",
                           attempts=0, next_attempt_at=utcnow()))  # fmt: skip
    db.commit()
    _fake_dns(monkeypatch, {"hook.example": "2002:7f00:1::1"})  # rebinding to 127.0.0.1 through 6to4
    deliver_due("test-worker")
    db.expire_all()
    delivery = db.scalar(select(WebhookDelivery).where(WebhookDelivery.msg_id == "msg_send_check"))
    assert delivery.status != "succeeded" and delivery.last_status_code is None
    assert "not globally routable" in delivery.last_error and "127.0.0.1" in delivery.last_error
