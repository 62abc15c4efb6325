"""Authentication before the body (issue 21, point 3): a bogus bearer token or session cookie is answered 401
before a byte of the body is read, JSON bodies included; valid credentials still get their body read, within
the route's limit. The bodies are made up on demand and counted (tests/test_body_limits.py's Body)."""

from __future__ import annotations

import json

import pytest

from tests.test_body_limits import Body, MiB, call

JSON_ROUTES = ["/api/v1/projects", "/api/v1/projects/1/rounds", "/api/v1/jobs", "/api/v1/webhooks",
               "/api/v1/assignments/1/judgment", "/api/v1/projects/1/import"]  # fmt: skip


@pytest.mark.only_db("sqlite")
@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("credentials", [{"authorization": "Bearer garbage"}, {"cookie": "rf_session=forged"},
                                         {"authorization": "Bearer garbage", "cookie": "rf_session=forged"}])  # fmt: skip
def test_bogus_credentials_get_401_with_no_json_body_read(app, path, credentials):
    body = Body(8 * MiB)
    headers = {"content-type": "application/json", "content-length": str(8 * MiB), "accept": "application/json"}
    status, text = call(app, "POST", path, headers | credentials, body)
    assert status == 401, text
    assert body.taken == 0


@pytest.mark.only_db("sqlite")
def test_a_chunked_json_body_with_a_bogus_token_is_not_read_either(app):
    body = Body(None)  # no Content-Length, never ends
    status, _ = call(app, "POST", "/api/v1/projects", {"content-type": "application/json",
                                                       "authorization": "Bearer garbage"}, body)  # fmt: skip
    assert status == 401
    assert body.taken == 0


@pytest.mark.only_db("sqlite")
def test_a_revoked_token_is_refused_before_the_body(app, users):
    admin = users.create("alice", "admin")
    other = users.create("bob", "admin")
    from app.db import session_scope
    from app.models import ApiToken

    with session_scope() as db:
        db.query(ApiToken).filter(ApiToken.user_id == other["id"]).delete()
    body = Body(4 * MiB)
    status, _ = call(app, "POST", "/api/v1/projects", {"content-type": "application/json",
                                                       "content-length": str(4 * MiB),
                                                       "authorization": f"Bearer {other['token']}"}, body)  # fmt: skip
    assert status == 401 and body.taken == 0
    # a valid token's JSON body is read and handled as before
    payload = json.dumps({"name": "Read", "mode": "pairwise"}).encode()
    body = Body(len(payload), prefix=payload)
    status, text = call(app, "POST", "/api/v1/projects", {"content-type": "application/json",
                                                          "content-length": str(len(payload)),
                                                          "authorization": f"Bearer {admin['token']}"}, body)  # fmt: skip
    assert status == 201, text
    assert body.taken == len(payload)
