"""Pairs rows say which rater groups favour each side and the prompt's category (issue 26: the reward-model audit's
accuracy by rater group and by prompt category reads these columns), in JSONL and Parquet alike."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq

from app.db import session_scope
from app.worker import run_one
from tests.helpers import import_lines, make_project
from tests.quality.builders import add_judgment, comparisons


def test_pairs_rows_carry_rater_groups_and_prompt_category(client, users, db_url):
    admin = users.create("admin", "admin")
    de = [users.create(f"de{i}", "annotator") for i in range(2)]
    fr = users.create("fr0", "annotator")
    plain = users.create("plain0", "annotator")
    for rater, labels in ((de[0], {"locale": "de"}), (de[1], {"locale": "de", "expertise": "law"}),
                          (fr, {"locale": "fr"})):  # fmt: skip
        assert client.patch(f"/api/v1/users/{rater['id']}", json={"labels": labels},
                            headers=admin["headers"]).status_code == 200  # fmt: skip
    project = make_project(client, admin, overlap=3)
    lines = [{"prompt": f"Q{i}?", "external_id": f"q{i}", "metadata": {"category": "code"} if i == 0 else {},
              "completions": [{"text": f"A{i}", "model": "a"}, {"text": f"B{i}", "model": "b"}]} for i in range(3)]
    response = import_lines(client, admin, project["id"], ("\n".join(map(json.dumps, lines)) + "\n").encode())
    assert response.status_code in (200, 201), response.text
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project["id"])):
            a, b = (cid for cid, _, _ in options)
            if n == 0:  # de picks A twice, fr picks B: A chosen; de for it, fr against
                votes = [(de[0], a), (de[1], a), (fr, b)]
            elif n == 1:  # everyone picks A
                votes = [(de[0], a), (de[1], a), (fr, a)]
            else:  # only an unlabelled rater
                votes = [(plain, b)]
            for rater, best in votes:
                add_judgment(session, comparison, rater["id"], [[best], [b if best == a else a]])
    snapshot = client.post(f"/api/v1/projects/{project['id']}/datasets", json={"format": "pairs"},
                           headers=admin["headers"]).json()  # fmt: skip
    assert run_one("test-worker") == snapshot["job_id"]
    dataset = client.get(f"/api/v1/datasets/{snapshot['id']}", headers=admin["headers"]).json()
    assert dataset["status"] == "ready", dataset

    def read(name: str) -> list[dict]:
        body = client.get(f"/api/v1/datasets/{snapshot['id']}/files/{name}", headers=admin["headers"])
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in body.text.splitlines()]
        return pq.read_table(io.BytesIO(body.content)).to_pylist()

    files = dataset["files"]
    jsonl = sorted((r for name in files if name.endswith(".jsonl") for r in read(name)), key=lambda r: r["comparison_id"])
    assert len(jsonl) == 3
    first, second, third = jsonl
    assert first["group_chosen"] == ["expertise=law", "locale=de"] and first["group_rejected"] == ["locale=fr"]
    assert first["category"] == "code" and first["chosen"] == "A0"
    assert second["group_chosen"] == ["expertise=law", "locale=de", "locale=fr"] and second["group_rejected"] == []
    assert second["category"] is None and third["group_chosen"] == third["group_rejected"] == []  # unlabelled rater
    parquet = sorted((r for name in files if name.endswith(".parquet") for r in read(name)),
                     key=lambda r: r["comparison_id"])
    assert parquet == jsonl
