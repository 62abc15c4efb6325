"""Dataset pages: export form on the project page, list, detail (status partial, preview, chart, files), delete."""

from __future__ import annotations

import json

from app.db import session_scope
from app.jobs.service import create_job
from app.models import DatasetSnapshot
from app.worker import run_one
from tests.auth.test_auth import login, session_csrf
from tests.helpers import import_lines, make_project

SCRIPT_TEXT = "<script>alert(1)</script>"


def _browser(client, username: str) -> dict:
    assert login(client, username, "secret-pass-1").status_code == 303
    return {"Accept": "text/html"}


def test_export_from_the_project_page_to_a_ready_dataset_page(client, users):
    admin = users.create("admin", "admin")
    project = make_project(client, admin)
    row = {"prompt": f"Say {SCRIPT_TEXT}", "completions": [{"text": SCRIPT_TEXT}, {"text": "fine"}], "ranking": [[0], [1]]}
    import_lines(client, admin, project["id"], (json.dumps(row) + "\n").encode())
    headers = _browser(client, "admin")
    project_page = client.get(f"/projects/{project['id']}", headers=headers).text
    assert f'action="/projects/{project["id"]}/datasets"' in project_page

    form = {"csrf_token": session_csrf(client), "format": "pairs", "date_from": "", "date_to": "",
            "min_agreement": "0", "min_votes": "1", "test_fraction": "0", "seed": "3"}  # fmt: skip
    created = client.post(f"/projects/{project['id']}/datasets", data=form, headers=headers, follow_redirects=False)
    assert created.status_code == 303
    dataset_url = created.headers["location"]
    building = client.get(dataset_url, headers=headers).text
    assert 'hx-trigger="load delay:1s"' in building and "building" in building
    fragment = client.get(dataset_url, headers=headers | {"HX-Request": "true"})
    assert fragment.text.lstrip().startswith("<div id=\"dataset-status\"") and "<html" not in fragment.text

    dataset_id = int(dataset_url.rsplit("/", 1)[1])
    with session_scope() as db:
        job_id = db.get(DatasetSnapshot, dataset_id).job_id
    assert run_one("pages-test") == job_id
    done = client.get(dataset_url, headers=headers | {"HX-Request": "true"})
    assert done.headers.get("HX-Refresh") == "true" and "load delay" not in done.text

    page = client.get(dataset_url, headers=headers).text
    assert SCRIPT_TEXT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # preview is escaped
    assert "<svg" in page and "<rect" in page  # pairs per day
    assert f"/datasets/{dataset_id}/files/train.jsonl" in page
    download = client.get(f"/datasets/{dataset_id}/files/train.jsonl", headers=headers)
    assert download.status_code == 200 and SCRIPT_TEXT in download.text
    assert client.get(f"/datasets/{dataset_id}/files/..%2Fmanifest.json", headers=headers).status_code in (400, 404)
    listing = client.get("/datasets", headers=headers).text
    assert f'href="/datasets/{dataset_id}"' in listing and "pairs" in listing


def test_delete_is_refused_while_referenced_then_works(client, users):
    admin = users.create("admin", "admin")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], b'{"prompt": "p", "completions": [{"text": "a"}, {"text": "b"}], '
                                               b'"ranking": [[0], [1]]}\n')  # fmt: skip
    snapshot = client.post(f"/api/v1/projects/{project['id']}/datasets", json={"format": "pairs"},
                           headers=admin["headers"]).json()  # fmt: skip
    run_one("pages-test")
    with session_scope() as db:
        training = create_job(db, "reward", project_id=project["id"], dataset_id=snapshot["id"])
        training_id = training.id
    headers = _browser(client, "admin")
    refused = client.post(f"/datasets/{snapshot['id']}/delete", data={"csrf_token": session_csrf(client)},
                          headers=headers, follow_redirects=False)  # fmt: skip
    assert refused.status_code == 409 and "refers to this dataset" in refused.text
    with session_scope() as db:
        from app.models import Job

        db.get(Job, training_id).status = "cancelled"
    deleted = client.post(f"/datasets/{snapshot['id']}/delete", data={"csrf_token": session_csrf(client)},
                          headers=headers, follow_redirects=False)  # fmt: skip
    assert deleted.status_code == 303
    assert client.get(f"/api/v1/datasets/{snapshot['id']}", headers=admin["headers"]).status_code == 404


def test_engineers_see_datasets_but_cannot_delete_and_annotators_cannot_see_them(client, users):
    users.create("eng", "engineer")
    users.create("anna", "annotator")
    headers = _browser(client, "eng")
    assert client.get("/datasets", headers=headers).status_code == 200
    client.cookies.clear()
    headers = _browser(client, "anna")
    assert client.get("/datasets", headers=headers).status_code == 403
