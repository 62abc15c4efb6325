"""Endpoints in the registry: checked on save against a real server, the key encrypted at rest and never shown,
staff only, refused as a training base."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.endpoints.conftest import SECRET
from tests.helpers import make_project


@pytest.fixture
def staff(users):
    return {"admin": users.create("root", "admin"), "engineer": users.create("eve", "engineer"),
            "rater": users.create("ann", "annotator")}  # fmt: skip


def add(client, who, **body):
    return client.post("/api/v1/endpoints", json=body, headers=who["headers"])


def test_an_endpoint_is_checked_on_save_and_its_key_never_shown(client, staff, served, db):
    from app.crypto import decrypt_secret
    from app.models import ModelEndpoint

    response = add(client, staff["engineer"], name="tiny-served", base_url=served.url + "/v1/", model=served.model,
                   api_key=SECRET, sampling={"temperature": 0.7, "max_tokens": 8}, max_concurrency=4,
                   price_input=1.0, price_output=2.0)  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["endpoint"]["base_url"] == served.url  # /v1/ taken off: the client adds it
    assert body["endpoint"]["has_api_key"] is True and body["endpoint"]["checked_at"]
    assert body["kind"] == "policy"
    db.rollback()
    row = db.scalar(select(ModelEndpoint))
    assert SECRET not in row.api_key_encrypted and decrypt_secret(row.api_key_encrypted) == SECRET
    for path in ("/api/v1/endpoints", "/api/v1/endpoints/tiny-served", f"/api/v1/endpoints/{body['id']}",
                 "/api/v1/models", f"/api/v1/models/{body['id']}", "/models", "/models/endpoints"):  # fmt: skip
        page = client.get(path, headers=staff["admin"]["headers"])
        assert page.status_code == 200, (path, page.text)
        assert SECRET not in page.text and "tiny-served" in page.text
    rotated = client.patch("/api/v1/endpoints/tiny-served", json={"api_key": SECRET + "-2", "max_concurrency": 2},
                           headers=staff["admin"]["headers"])  # fmt: skip
    assert rotated.status_code == 200 and SECRET not in rotated.text
    db.rollback()
    assert decrypt_secret(db.scalar(select(ModelEndpoint)).api_key_encrypted) == SECRET + "-2"
    checked = client.post("/api/v1/endpoints/tiny-served/check", headers=staff["admin"]["headers"])
    assert checked.status_code == 200 and served.model in checked.json()["served"]


def test_bad_endpoints_are_clear_errors_at_save(client, staff, served, fault_server):
    from tests.conftest import free_port

    wrong = add(client, staff["admin"], name="wrong", base_url=served.url, model="no-such-model")
    assert wrong.status_code == 422 and "no-such-model" in wrong.json()["detail"] and served.model in wrong.text
    closed = add(client, staff["admin"], name="closed", base_url=f"http://127.0.0.1:{free_port()}", model="m")
    assert closed.status_code == 422 and "unreachable" in closed.json()["detail"]
    metadata = add(client, staff["admin"], name="meta", base_url="http://169.254.169.254", model="m")
    assert metadata.status_code == 422 and "link-local" in metadata.json()["detail"]
    for body in ({"base_url": "ftp://x", "model": "m"}, {"base_url": "http://u:p@127.0.0.1:1", "model": "m"},
                 {"base_url": served.url, "model": served.model, "api_key": "a", "api_key_env": "KEY"},
                 {"base_url": served.url, "model": served.model, "sampling": {"temperature": "hot"}},
                 {"base_url": served.url, "model": served.model, "sampling": {"logit_bias": {}}},
                 {"base_url": served.url, "model": served.model, "max_concurrency": 0},
                 {"base_url": served.url, "model": served.model, "nonsense": 1}):  # fmt: skip
        refused = add(client, staff["admin"], name="bad", **body)
        assert refused.status_code == 422, (body, refused.text)
    assert client.get("/api/v1/endpoints/bad", headers=staff["admin"]["headers"]).status_code == 404
    # the key travels as a bearer token, and a server that refuses it is a clear error
    fault_server.reset()
    ok = add(client, staff["admin"], name="faulty", base_url=fault_server.url, model=fault_server.model,
             api_key=SECRET)  # fmt: skip
    assert ok.status_code == 201, ok.text
    assert fault_server.asked()[0]["auth"] == f"Bearer {SECRET}"


def test_raters_never_see_endpoints(client, staff, served):
    assert add(client, staff["admin"], name="tiny-served", base_url=served.url, model=served.model).status_code == 201
    rater = staff["rater"]["headers"]
    assert add(client, staff["rater"], name="x", base_url=served.url, model=served.model).status_code == 403
    for path in ("/api/v1/endpoints", "/api/v1/endpoints/tiny-served", "/api/v1/models"):
        assert client.get(path, headers=rater).status_code == 403
    assert client.patch("/api/v1/endpoints/tiny-served", json={"max_concurrency": 1}, headers=rater).status_code == 403
    assert client.post("/api/v1/endpoints/serve", json={"version": "tiny-served"}, headers=rater).status_code == 403
    version_id = client.get("/api/v1/endpoints/tiny-served", headers=staff["admin"]["headers"]).json()["id"]
    for page in ("/models/endpoints", f"/models/{version_id}", "/models"):  # the pages naming them are staff-only
        response = client.get(page, headers=rater)
        assert response.status_code == 403 and "tiny-served" not in response.text, page


@pytest.mark.parametrize(("url", "refused"), [
    ("http://169.254.169.254", True), ("http://[fe80::1]:8000", True), ("http://[fd00:ec2::254]", True),
    ("http://[::ffff:169.254.169.254]", True), ("http://10.0.0.5:8000", False), ("http://127.0.0.1:1", False),
    ("http://[::1]:8000", False), ("http://192.168.1.7", False),
])  # fmt: skip
@pytest.mark.only_db("sqlite")
def test_link_local_addresses_are_refused_unless_the_environment_allows_them(url, refused, monkeypatch, db_url):
    """Private and loopback addresses are allowed (a vLLM server beside the worker); link-local ones, where cloud
    metadata services answer (IPv4, IPv6, AWS's IPv6 one, IPv4-mapped), only with RANKFORGE_ENDPOINTS_ALLOW_LINK_LOCAL."""
    from app.config import get_settings
    from app.errors import EndpointError
    from app.registry.endpoints import check_address

    if refused:
        with pytest.raises(EndpointError, match="RANKFORGE_ENDPOINTS_ALLOW_LINK_LOCAL"):
            check_address(url)
    else:
        check_address(url)
    monkeypatch.setenv("RANKFORGE_ENDPOINTS_ALLOW_LINK_LOCAL", "true")
    get_settings.cache_clear()
    try:
        check_address(url)  # allowed by the environment
    finally:
        monkeypatch.delenv("RANKFORGE_ENDPOINTS_ALLOW_LINK_LOCAL")
        get_settings.cache_clear()


def test_training_refuses_an_endpoint_as_its_base(client, staff, served):
    project = make_project(client, staff["admin"])
    assert add(client, staff["admin"], name="tiny-served", base_url=served.url, model=served.model).status_code == 201
    response = client.post("/api/v1/jobs", json={"kind": "dpo", "project_id": project["id"],
                                                 "base_model": "tiny-served"}, headers=staff["engineer"]["headers"])  # fmt: skip
    assert response.status_code == 422 and "endpoint" in response.json()["detail"]
    # with no base named, training starts from the newest local version, never from an endpoint
    response = client.post("/api/v1/jobs", json={"kind": "dpo", "project_id": project["id"]},
                           headers=staff["engineer"]["headers"])  # fmt: skip
    assert response.status_code == 422 and "No policy model version" in response.json()["detail"]


def test_the_endpoints_page_adds_one_through_its_form(client, staff, fault_server):
    from tests.auth.test_auth import form_csrf, login

    assert login(client, "eve", staff["engineer"]["password"]).status_code in (302, 303)
    page = client.get("/models/endpoints")
    assert page.status_code == 200 and 'id="add-endpoint"' in page.text
    form = {"csrf_token": form_csrf(page.text), "name": "form-made", "base_url": fault_server.url,
            "model": fault_server.model, "api_key": SECRET, "max_concurrency": "3", "timeout_seconds": "20"}  # fmt: skip
    added = client.post("/models/endpoints", data=form)
    assert added.status_code == 201 and "form-made" in added.text and SECRET not in added.text
    refused = client.post("/models/endpoints", data=form | {"name": "form-bad", "model": "nope"})
    assert refused.status_code == 422 and "nope" in refused.text and SECRET not in refused.text
    assert client.post("/models/endpoints", data={k: v for k, v in form.items() if k != "csrf_token"}).status_code == 403
    listed = client.get("/api/v1/endpoints/form-made", headers=staff["admin"]["headers"]).json()
    assert listed["endpoint"]["max_concurrency"] == 3 and listed["endpoint"]["has_api_key"] is True
