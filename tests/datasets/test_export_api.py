"""Snapshots end to end: the API queues an export job, a worker builds it, the files come back."""

import hashlib
import json
import shutil

from app.db import session_scope
from app.worker import run_one
from tests.helpers import import_lines, make_project, native_lines


def _export(client, staff, project_id, body=None):
    response = client.post(f"/api/v1/projects/{project_id}/datasets", json=body or {"format": "pairs"},
                           headers=staff["headers"])  # fmt: skip
    assert response.status_code == 202, response.text
    snapshot = response.json()
    assert snapshot["status"] == "building" and snapshot["job_id"]
    assert run_one("test-worker") == snapshot["job_id"]
    job = client.get(f"/api/v1/jobs/{snapshot['job_id']}", headers=staff["headers"]).json()
    return client.get(f"/api/v1/datasets/{snapshot['id']}", headers=staff["headers"]).json(), job


def test_export_builds_a_verified_snapshot(client, users):
    admin, engineer = users.create("admin", "admin"), users.create("eng", "engineer")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(20, k=3, ranking=True))
    dataset, job = _export(client, engineer, project["id"],
                           {"format": "pairs", "split": {"test_fraction": 0.25, "seed": 1}})  # fmt: skip
    assert job["status"] == "succeeded", job
    assert job["result"]["dataset_id"] == dataset["id"]
    assert dataset["status"] == "ready"
    # 20 comparisons ranked [[0],[1],[2]] -> 3 pairs each
    assert dataset["rows"]["train"] + dataset["rows"]["test"] == 60
    assert dataset["rows"]["test"] > 0
    assert {"train.jsonl", "test.jsonl", "train.parquet", "test.parquet"} <= set(dataset["files"])
    body = client.get(f"/api/v1/datasets/{dataset['id']}/files/train.jsonl", headers=engineer["headers"])
    assert body.status_code == 200
    rows = [json.loads(line) for line in body.text.splitlines()]
    assert all(set(r) >= {"prompt", "chosen", "rejected", "comparison_id", "margin", "agreement", "n_votes", "weight"}
               for r in rows)  # fmt: skip
    assert all(r["chosen"].startswith("answer 0") or r["rejected"].startswith("answer 2") for r in rows)


def test_same_judgments_same_bytes_and_one_more_judgment_changes_the_hash(client, users):
    admin = users.create("admin", "admin")
    rater = users.create("rita", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(5, ranking=True))
    import_lines(client, admin, project["id"], native_lines(1, prefix="q"))
    first, _ = _export(client, admin, project["id"])
    second, _ = _export(client, admin, project["id"])
    assert first["sha256"] == second["sha256"]
    files = [client.get(f"/api/v1/datasets/{d['id']}/files/train.parquet", headers=admin["headers"]).content
             for d in (first, second)]  # fmt: skip
    assert hashlib.sha256(files[0]).digest() == hashlib.sha256(files[1]).digest()
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
    ids = [o["id"] for o in task["options"]]
    client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", json={"ranking": [[ids[0]], [ids[1]]]},
                headers=rater["headers"])  # fmt: skip
    third, _ = _export(client, admin, project["id"])
    assert third["sha256"] != first["sha256"]


def test_filters_matching_nothing_fail_with_a_clear_error(client, users):
    admin = users.create("admin", "admin")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(3, ranking=True))
    dataset, job = _export(client, admin, project["id"], {"format": "pairs", "filters": {"sources": ["ai"]}})
    assert job["status"] == "failed"
    assert "match no judgments" in job["error"]
    assert dataset["status"] == "failed"


def test_unknown_format_is_refused(client, users):
    admin = users.create("admin", "admin")
    project = make_project(client, admin)
    response = client.post(f"/api/v1/projects/{project['id']}/datasets", json={"format": "csv"},
                           headers=admin["headers"])  # fmt: skip
    assert response.status_code == 422
    assert "format" in json.dumps(response.json()["detail"])


def test_path_traversal_and_tampering_are_refused(client, users):
    admin = users.create("admin", "admin")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(3, ranking=True))
    dataset, _ = _export(client, admin, project["id"])
    base = f"/api/v1/datasets/{dataset['id']}/files/"
    for name in ("../manifest.json", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "nope.jsonl"):
        response = client.get(base + name, headers=admin["headers"])
        assert response.status_code in (400, 404), (name, response.status_code)
        assert "root:" not in response.text
    from app.datasets.service import get_snapshot, snapshot_dir

    with session_scope() as db:
        path = snapshot_dir(get_snapshot(db, dataset["id"])) / "train.jsonl"
    path.write_text(path.read_text().replace("answer", "ANSWER"))
    response = client.get(base + "train.jsonl", headers=admin["headers"])
    assert response.status_code == 409 and "integrity" in response.json()["detail"]
    shutil.rmtree(path.parent)


def test_annotators_cannot_reach_datasets(client, users):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(2, ranking=True))
    dataset, _ = _export(client, admin, project["id"])
    for method, url in (("post", f"/api/v1/projects/{project['id']}/datasets"), ("get", "/api/v1/datasets"),
                        ("get", f"/api/v1/datasets/{dataset['id']}"),
                        ("get", f"/api/v1/datasets/{dataset['id']}/files/train.jsonl"),
                        ("delete", f"/api/v1/datasets/{dataset['id']}")):  # fmt: skip
        response = client.request(method, url, headers=rater["headers"], json={} if method == "post" else None)
        assert response.status_code == 403, (method, url, response.status_code)


def test_every_format_parquet_holds_the_same_rows_as_jsonl(client, users):
    """Parquet is parsed from the JSONL into each format's declared Arrow schema: same rows, same values,
    and a completion without a model name is a null, not an error."""
    import io

    import pyarrow.parquet as pq

    admin = users.create("admin", "admin")
    project = make_project(client, admin, mode="rank")
    lines = native_lines(8, k=3, ranking=True).decode().splitlines()
    anonymous = json.loads(lines[0])
    del anonymous["completions"][0]["model"]  # the best-ranked one: in the rows of every format
    lines[0] = json.dumps(anonymous)
    import_lines(client, admin, project["id"], ("\n".join(lines) + "\n").encode())
    for export_format in ("pairs", "kto", "rankings", "sft"):
        for conversational in (False, True):
            dataset, job = _export(client, admin, project["id"], {"format": export_format,
                                   "conversational": conversational, "split": {"test_fraction": 0.0}})  # fmt: skip
            assert job["status"] == "succeeded", (export_format, job["error"])
            jsonl = client.get(f"/api/v1/datasets/{dataset['id']}/files/train.jsonl", headers=admin["headers"])
            parquet = client.get(f"/api/v1/datasets/{dataset['id']}/files/train.parquet", headers=admin["headers"])
            rows = [json.loads(line) for line in jsonl.text.splitlines()]
            table = pq.read_table(io.BytesIO(parquet.content))
            assert table.num_rows == len(rows) > 0
            assert table.to_pylist() == rows, export_format
            assert table.schema.field("prompt_id").type == "int64"
            models = [m for r in rows for key in ("chosen_model", "rejected_model", "model", "models") if key in r
                      for m in (r[key] if key == "models" else [r[key]])]  # fmt: skip
            assert None in models and "model-0" in models


def test_a_judgment_excluded_in_review_leaves_exports(client, users):
    admin = users.create("admin", "admin")
    raters = [users.create(f"rater{i}", "annotator") for i in range(2)]
    project = make_project(client, admin, overlap=2)
    import_lines(client, admin, project["id"], native_lines(1))
    judgment_ids = []
    for rater, flags in zip(raters, ([], ["wrong"]), strict=True):
        task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
        ids = sorted(o["id"] for o in task["options"])
        response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                               json={"ranking": [[ids[0]], [ids[1]]], "flags": flags}, headers=rater["headers"])  # fmt: skip
        assert response.status_code in (200, 201), response.text
        judgment_ids.append(response.json()["id"])
    before, _ = _export(client, admin, project["id"], {"format": "pairs", "filters": {"sources": ["human"]},
                                                       "split": {"test_fraction": 0.0}})
    (row,) = [json.loads(x) for x in client.get(f"/api/v1/datasets/{before['id']}/files/train.jsonl",
                                                 headers=admin["headers"]).text.splitlines()]  # fmt: skip
    assert row["n_votes"] == 2
    review = client.post(f"/api/v1/judgments/{judgment_ids[1]}/review", json={"resolution": "excluded", "note": "x"},
                         headers=admin["headers"])  # fmt: skip
    assert review.status_code == 201, review.text
    after, _ = _export(client, admin, project["id"], {"format": "pairs", "filters": {"sources": ["human"]},
                                                       "split": {"test_fraction": 0.0}})
    (row,) = [json.loads(x) for x in client.get(f"/api/v1/datasets/{after['id']}/files/train.jsonl",
                                                headers=admin["headers"]).text.splitlines()]  # fmt: skip
    assert row["n_votes"] == 1
