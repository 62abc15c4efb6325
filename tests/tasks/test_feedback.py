"""Richer human feedback (issue 14) without a browser: edits stored and exported (and rejected out of exports),
markup in edits escaped, the ratings export, practice items and the qualification gate, the pay report."""

from __future__ import annotations

import json
import re

from sqlalchemy import func, select

from app.models import Comparison, Completion, Judgment, PracticeAnswer
from app.worker import run_one
from tests.helpers import import_lines, make_project, native_lines


def _export(client, staff, project_id, body):
    response = client.post(f"/api/v1/projects/{project_id}/datasets", json=body, headers=staff["headers"])
    assert response.status_code == 202, response.text
    assert run_one("test-worker") == response.json()["job_id"]
    dataset = client.get(f"/api/v1/datasets/{response.json()['id']}", headers=staff["headers"]).json()
    assert dataset["status"] == "ready", dataset
    rows = []
    for name in ("train.jsonl", "test.jsonl"):
        if name in dataset["files"]:
            text = client.get(f"/api/v1/datasets/{dataset['id']}/files/{name}", headers=staff["headers"]).text
            rows += [json.loads(line) for line in text.splitlines()]
    return rows


def _page_submit(client, rater, project_id, task, form):
    return client.post(f"/projects/{project_id}/annotate/{task['assignment_id']}", data=form,
                       headers=rater["headers"] | {"HX-Request": "true"})  # fmt: skip


def test_an_edit_becomes_a_completion_and_pairs_and_a_rejected_one_leaves_the_exports(client, users, db):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin, mode="rank")
    import_lines(client, admin, project["id"], native_lines(1, k=3))
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
    a, b, c = [o["id"] for o in task["options"]]
    markup = "Better: <script>alert(1)</script> **bold** <img src=x onerror=alert(2)>"
    response = _page_submit(client, rater, project["id"], task, {
        "ranking": json.dumps([[b], [a], [c]]), "edit_text": markup, "edit_parent_id": str(b),
        "time_spent_ms": "5000", "active_ms": "4000"})  # fmt: skip
    assert response.status_code == 200, response.text
    edit = db.scalar(select(Completion).where(Completion.source == "human_edit"))
    judgment = db.scalar(select(Judgment))
    assert (edit.parent_id, edit.author_id, edit.judgment_id, edit.text) == (b, rater["id"], judgment.id, markup)
    assert edit.guideline_version == 1 and judgment.active_ms == 4000

    pairs = _export(client, admin, project["id"], {"format": "pairs", "split": {"test_fraction": 0}})
    edited = {(r["chosen_id"], r["rejected_id"]): r for r in pairs if r["edited"]}
    assert set(edited) == {(edit.id, b), (edit.id, a), (edit.id, c)}  # over the parent and all it beat
    assert edited[(edit.id, b)]["margin"] == 1.0 and edited[(edit.id, c)]["margin"] == 3.0
    assert edited[(edit.id, b)]["chosen"] == markup and edited[(edit.id, b)]["chosen_model"] is None
    assert len([r for r in pairs if not r["edited"]]) == 3
    sft = _export(client, admin, project["id"], {"format": "sft", "split": {"test_fraction": 0}})
    assert [(r["completion_id"], r["edited"]) for r in sft] == [(b, False), (edit.id, True)]
    without = _export(client, admin, project["id"],
                      {"format": "pairs", "filters": {"include_edits": False}, "split": {"test_fraction": 0}})  # fmt: skip
    assert len(without) == 3 and not any(r["edited"] for r in without)

    # The admin page shows the edit escaped, with a diff; rejecting it takes it out of every export.
    page = client.get(f"/projects/{project['id']}/edits", headers=admin["headers"])
    assert page.status_code == 200
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<img src=x" not in page.text and "<ins" in page.text
    assert client.get(f"/projects/{project['id']}/edits", headers=rater["headers"]).status_code == 403
    assert client.post(f"/projects/{project['id']}/edits/{edit.id}", data={"action": "reject"},
                       headers=rater["headers"]).status_code == 403  # fmt: skip
    rejected = client.post(f"/projects/{project['id']}/edits/{edit.id}", data={"action": "reject"},
                           headers=admin["headers"], follow_redirects=False)  # fmt: skip
    assert rejected.status_code == 303
    pairs = _export(client, admin, project["id"], {"format": "pairs", "split": {"test_fraction": 0}})
    assert len(pairs) == 3 and not any(r["edited"] for r in pairs)
    sft = _export(client, admin, project["id"], {"format": "sft", "split": {"test_fraction": 0}})
    assert [r["completion_id"] for r in sft] == [b]


def test_edits_are_checked(client, users, db):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin)
    import_lines(client, admin, project["id"], native_lines(2))
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
    a, b = [o["id"] for o in task["options"]]
    url = f"/api/v1/assignments/{task['assignment_id']}/judgment"
    for edit, why in [({"text": "x", "parent_id": b}, "ranked best"),  # b was ranked worse
                      ({"text": "new"}, "new answers"),  # the project does not allow answers from scratch
                      ({"text": task["options"][0]["text"], "parent_id": a}, "same as the response"),
                      ({"text": "x" * 100_001, "parent_id": a}, "100000")]:  # fmt: skip
        response = client.post(url, json={"ranking": [[a], [b]], "edit": edit}, headers=rater["headers"])
        assert response.status_code == 422 and why in response.text, response.text
    assert db.scalar(select(func.count()).select_from(Judgment)) == 0
    client.patch(f"/api/v1/projects/{project['id']}", json={"allow_new_answers": True}, headers=admin["headers"])
    response = client.post(url, json={"ranking": [[a], [b]], "edit": {"text": "From scratch"}}, headers=rater["headers"])
    assert response.status_code == 201, response.text
    pairs = _export(client, admin, project["id"], {"format": "pairs", "split": {"test_fraction": 0}})
    assert {(r["rejected_id"], r["margin"]) for r in pairs if r["edited"]} == {(a, 1.0), (b, 2.0)}


def test_ratings_export_matches_the_scores_entered(client, users):
    admin = users.create("admin", "admin")
    raters = [users.create(f"r{i}", "annotator") for i in range(2)]
    scales = [{"name": "helpful", "min": 1, "max": 5}, {"name": "verbose", "min": 1, "max": 3}]
    project = make_project(client, admin, overlap=2, attributes=scales)
    import_lines(client, admin, project["id"], native_lines(1))
    scores = [({"helpful": 5, "verbose": 1}, {"helpful": 2}), ({"helpful": 3, "verbose": 3}, {"helpful": 4})]
    ids = None
    for rater, (first, second) in zip(raters, scores, strict=True):
        task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
        ids = sorted(o["id"] for o in task["options"])
        attributes = {name: {str(ids[0]): value} for name, value in first.items()}
        for name, value in second.items():
            attributes.setdefault(name, {})[str(ids[1])] = value
        response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                               json={"ranking": [[ids[0]], [ids[1]]], "attributes": attributes},
                               headers=rater["headers"])  # fmt: skip
        assert response.status_code == 201, response.text
    rows = _export(client, admin, project["id"], {"format": "ratings", "split": {"test_fraction": 0}})
    by_id = {r["completion_id"]: r for r in rows}
    assert by_id[ids[0]]["helpful"] == 4.0 and by_id[ids[0]]["verbose"] == 2.0 and by_id[ids[0]]["n_votes"] == 2
    assert by_id[ids[1]]["helpful"] == 3.0 and by_id[ids[1]]["verbose"] is None
    assert by_id[ids[0]]["completion"].startswith("answer") and "prompt" in by_id[ids[0]]
    assert by_id[ids[0]]["rank"] == 0 and by_id[ids[1]]["rank"] == 1
    # The per-attribute leaderboard: each model's mean score per scale (model-0 wrote the first completion).
    board = client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=admin["headers"]).json()
    assert [(e["name"], e["mean"], e["n"]) for e in board["attributes"]["helpful"]] == [("model-0", 4.0, 2),
                                                                                        ("model-1", 3.0, 2)]
    assert [(e["name"], e["mean"]) for e in board["attributes"]["verbose"]] == [("model-0", 2.0)]
    page = client.get(f"/projects/{project['id']}/leaderboard", headers=admin["headers"])
    assert page.status_code == 200 and "attribute-leaderboard" in page.text


def _practice_project(client, admin, n_practice=2, required=2):
    project = make_project(client, admin, practice_required=required, practice_pass_rate=0.75)
    import_lines(client, admin, project["id"], native_lines(n_practice, ranking=True, prefix="gold"), gold="true")
    import_lines(client, admin, project["id"], native_lines(2, prefix="real"))
    return project


def test_the_qualification_serves_practice_with_feedback_until_passed_and_practice_stays_out(client, users, db):
    admin, rater = users.create("admin", "admin"), users.create("rita", "annotator")
    project = _practice_project(client, admin)
    practice = client.get(f"/projects/{project['id']}/practice", headers=admin["headers"])
    gold_ids = sorted({int(x) for x in re.findall(r'practice-items/(\d+)"', practice.text)})
    assert len(gold_ids) == 2
    assert client.post(f"/projects/{project['id']}/practice-items/{gold_ids[0]}", data={"explanation": "x"},
                       headers=rater["headers"]).status_code == 403  # fmt: skip
    for gold_id in gold_ids:
        response = client.post(f"/projects/{project['id']}/practice-items/{gold_id}",
                               data={"explanation": "Answer **0** is *complete*.", "action": "mark"},
                               headers=admin["headers"], follow_redirects=False)  # fmt: skip
        assert response.status_code == 303

    # Before qualifying: no real work from the API, practice items on the rating page.
    refused = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"])
    assert refused.status_code == 403 and "qualification" in refused.text
    hx = rater["headers"] | {"HX-Request": "true"}
    answers = []
    for step in range(2):
        page = client.post(f"/projects/{project['id']}/annotate/next", headers=hx)
        assert page.status_code == 200 and f"Practice</strong> {step + 1} of 2" in page.text
        url = re.search(r'action="(/projects/\d+/practice/\d+)"', page.text).group(1)
        ids = [int(i) for i in json.loads(re.search(r"data-option-ids='([^']+)'", page.text).group(1))]
        comparison = db.get(Comparison, int(url.rsplit("/", 1)[1]))
        best, worst = comparison.gold_ranking[0][0], comparison.gold_ranking[1][0]
        ranking = [[best], [worst]] if step == 0 else [[worst], [best]]  # right, then wrong
        feedback = client.post(url, data={"ranking": json.dumps(ranking), "active_ms": "1000"}, headers=hx)
        assert feedback.status_code == 200 and "Expected" in feedback.text
        assert "<strong>0</strong>" in feedback.text  # the explanation, as markdown
        answers.append(feedback.text)
        assert set(ids) == {best, worst}
    assert "Correct" in answers[0] and "Not as expected" in answers[1]
    # 50% < 75%: not qualified; the page says so and serves no real task.
    page = client.post(f"/projects/{project['id']}/annotate/next", headers=hx)
    assert "Not qualified yet" in page.text
    assert client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).status_code == 403
    assert db.scalar(select(func.count()).select_from(Judgment)) == 0  # practice is never a judgment
    stats = client.get(f"/api/v1/projects/{project['id']}/stats", headers=admin["headers"]).json()
    assert stats["judgments"] == 0

    # The admin sees the results and resets; answered right twice, the rater gets real work.
    results = client.get(f"/projects/{project['id']}/practice", headers=admin["headers"]).text
    assert "rita" in results and "not qualified" in results
    client.post(f"/projects/{project['id']}/practice-results/{rater['id']}/reset", headers=admin["headers"])
    assert db.scalar(select(func.count()).select_from(PracticeAnswer)) == 0
    for _ in range(2):
        page = client.post(f"/projects/{project['id']}/annotate/next", headers=hx)
        url = re.search(r'action="(/projects/\d+/practice/\d+)"', page.text).group(1)
        comparison = db.get(Comparison, int(url.rsplit("/", 1)[1]))
        db.expire_all()
        client.post(url, data={"ranking": json.dumps(comparison.gold_ranking)}, headers=hx)
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"])
    assert task.status_code == 200 and "real" in task.json()["prompt"]  # never a practice item
    page = client.post(f"/projects/{project['id']}/annotate/next", headers=hx)
    assert "Practice</strong>" not in page.text and "judgment-form" in page.text


def test_pay_report_counts_active_time_and_multiplies_the_rate(client, users):
    admin, rater = users.create("admin", "admin"), users.create("-rita", "annotator")
    project = make_project(client, admin, pay_unit="hour", pay_rate=30.0)
    import_lines(client, admin, project["id"], native_lines(2))
    for active in (1_800_000, 900_000):  # half an hour, a quarter
        task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
        ids = [o["id"] for o in task["options"]]
        response = _page_submit(client, rater, project["id"], task, {
            "ranking": json.dumps([[ids[0]], [ids[1]]]), "time_spent_ms": "9000000", "active_ms": str(active)})  # fmt: skip
        assert response.status_code == 200
    page = client.get(f"/projects/{project['id']}/pay", headers=admin["headers"])
    assert page.status_code == 200 and "0.75" in page.text and "22.50" in page.text
    csv_text = client.get(f"/projects/{project['id']}/pay?format=csv", headers=admin["headers"]).text
    header, row = csv_text.splitlines()
    assert header.startswith("day,username,judgments")
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert values["username"] == "'-rita" and values["judgments"] == "2" and float(values["active_hours"]) == 0.75
    assert float(values["pay"]) == 22.5
    assert client.get(f"/projects/{project['id']}/pay", headers=rater["headers"]).status_code == 403
