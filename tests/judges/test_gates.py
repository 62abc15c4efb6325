"""The judge gate: a judge with a planted 40% order-swap flip rate is stopped from prelabelling. Its verdicts are
stored straight through store_verdicts (as a judge job would); the humans are one truthful rater per comparison,
one vote of two required, so a counted AI vote would complete a comparison."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import select

from tests.judges.test_judges import add_rules_judge, project_with, world  # noqa: F401 (fixture)

GATE = {"max_flip_rate": 0.2, "min_accuracy": 0.7, "min_sample": 50}


def test_flip_and_tie_aware_scores():
    from app.judges.gates import flipped, tie_aware_score

    assert flipped([0.8, 0.3]) is False and flipped([0.2, 0.9]) is False  # the same answer in both orders
    assert flipped([0.8, 0.7]) is True and flipped([0.1, 0.4]) is True  # the same position in both orders
    assert flipped([0.8]) is None and flipped(None) is None and flipped([0.5, 0.9]) is None
    assert tie_aware_score(0, 0) == 1 and tie_aware_score(-1, -1) == 1
    assert tie_aware_score(-1, 1) == 0.5 and tie_aware_score(0, -1) == 0.5 and tie_aware_score(0, 1) == 0


def test_a_judge_with_a_planted_flip_rate_is_switched_to_shadow(client, world, db):  # noqa: F811
    from app.judges.service import create_judge, create_judge_job, judge_agreement, store_verdicts
    from app.models import (
        AIPolicy,
        AIVerdict,
        Comparison,
        Judgment,
        Project,
        User,
        WebhookDelivery,
        WebhookEndpoint,
    )

    n = 300
    pid = project_with(client, world, [{"prompt": f"p{i}", "external_id": f"x{i}",
                                        "completions": [{"text": f"a{i}"}, {"text": f"b{i}"}]} for i in range(n)],
                       overlap=2)  # fmt: skip
    project = db.get(Project, pid)
    comparisons = list(
        db.scalars(select(Comparison).where(Comparison.project_id == pid).order_by(Comparison.id))
    )
    rng = random.Random(3)
    truth = {c.id: rng.choice(c.completion_ids) for c in comparisons}
    rater = db.scalar(select(User).where(User.username == "ann0"))
    for c in comparisons:
        other = next(x for x in c.completion_ids if x != truth[c.id])
        db.add(Judgment(comparison_id=c.id, project_id=pid, rater_id=rater.id, ranking=[[truth[c.id]], [other]],
                        source="human", top_completion_id=truth[c.id]))  # fmt: skip
        c.n_judgments = 1
    db.add(WebhookEndpoint(project_id=pid, url="https://hooks.example.com/rankforge", events=["judge.gate_failed"],
                           secret="x" * 32))  # fmt: skip
    judge = create_judge(db, project, "flippy", "rules")
    db.commit()
    headers = world["admin"]["headers"]
    url = f"/api/v1/projects/{pid}/ai-policy"
    put = client.put(
        url, json={"policy": "shadow", "judge": judge.id, "threshold": 0.5, "gate": GATE}, headers=headers
    )
    assert put.status_code == 200 and put.json()["gate"]["max_flip_rate"] == 0.2, put.text
    # No checked sample yet: prelabel is refused, naming why.
    refused = client.put(url, json={"policy": "prelabel"}, headers=headers)
    assert refused.status_code == 422 and "only 0 verdicts checked" in refused.text

    def verdicts(batch, flip_share):
        out = []
        for c in batch:
            a, b = c.completion_ids
            if rng.random() < flip_share:  # follows the order: prefers the first shown both times, picks a
                p_first, best = [0.8, 0.8], a
            else:  # the true answer in both orders
                p_first, best = ([0.8, 0.2] if truth[c.id] == a else [0.2, 0.8]), truth[c.id]
            out.append({"comparison_id": c.id, "ranking": [[best], [a if best == b else b]], "confidence": 0.9,
                        "p_first": p_first, "pairs": []})  # fmt: skip
        return out

    db.rollback()
    project = db.get(Project, pid)
    first = store_verdicts(
        db, create_judge_job(db, project, judge=judge.id), verdicts(comparisons[:100], 0.0)
    )
    db.commit()
    assert first["stored"] == 100 and first["counted"] == 0  # shadow
    allowed = client.put(url, json={"policy": "prelabel"}, headers=headers)
    assert allowed.status_code == 200 and allowed.json()["policy"] == "prelabel", allowed.text

    db.rollback()
    project = db.get(Project, pid)
    planted = verdicts(comparisons[100:], 0.4)
    second = store_verdicts(db, create_judge_job(db, project, judge=judge.id), planted)
    db.commit()
    planted_flips = sum(v["p_first"] == [0.8, 0.8] for v in planted)
    assert 0.3 < planted_flips / len(planted) < 0.5
    assert second["stored"] == 200 and second["counted"] == 0

    db.rollback()
    policy = db.get(AIPolicy, pid)
    assert policy.policy == "shadow"
    tripped = policy.gate["tripped"]
    assert tripped["judge"] == "flippy" and tripped["compared"] == 300
    assert tripped["flip_rate"] == pytest.approx(planted_flips / 300)
    assert (
        "flip rate" in tripped["reasons"][0] and len(tripped["reasons"]) == 1
    )  # accuracy stays above the floor
    # Statistics: no AI vote counted, every comparison still wants its second (human) vote.
    assert not any(db.scalars(select(AIVerdict.counted).where(AIVerdict.project_id == pid)))
    assert {c.n_judgments for c in db.scalars(select(Comparison).where(Comparison.project_id == pid))} == {1}
    figures = {f["judge"]: f for f in judge_agreement(db, project)}["flippy"]
    assert figures["counted"] == 0 and figures["flip_rate"] == pytest.approx(planted_flips / 300)
    task = client.get(f"/api/v1/projects/{pid}/tasks/next", headers=world["raters"][1]["headers"])
    assert task.status_code == 200  # the comparisons still go to humans
    stats = client.get(f"/api/v1/projects/{pid}/stats", headers=headers).json()
    assert stats["judgments"] == 300 and stats["comparisons"]["complete"] == 0  # the human votes alone
    # Exports (default sources): every pair rests on the one human vote, none on the judge's.
    from app.models import Job
    from app.worker import run_one

    for job_id in db.scalars(select(Job.id).where(Job.status == "queued")):  # the judge jobs stored above by hand
        assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers).status_code == 200
    snapshot = client.post(f"/api/v1/projects/{pid}/datasets", json={"format": "pairs"}, headers=headers)
    assert snapshot.status_code == 202, snapshot.text
    snapshot = snapshot.json()
    assert run_one("test-worker") == snapshot["job_id"]
    files = client.get(f"/api/v1/datasets/{snapshot['id']}", headers=headers).json()["files"]
    rows = [json.loads(line) for name in files if name.endswith(".jsonl")
            for line in client.get(f"/api/v1/datasets/{snapshot['id']}/files/{name}", headers=headers).text.splitlines()]  # fmt: skip
    assert len(rows) == 300 and {tuple(r["sources"]) for r in rows} == {("human",)}
    assert {r["n_votes"] for r in rows} == {1} and {r["ai_confidence"] for r in rows} == {None}
    assert all(r["chosen_id"] == truth[r["comparison_id"]] for r in rows)
    # The webhook event, and the notice on the judges page.
    events = list(
        db.scalars(select(WebhookDelivery).where(WebhookDelivery.event_type == "judge.gate_failed"))
    )
    assert len(events) == 1 and events[0].payload["data"]["judge"] == "flippy"
    page = client.get(f"/projects/{pid}/judges", headers=headers | {"Accept": "text/html"})
    assert page.status_code == 200 and 'id="gate-notice"' in page.text and "flip rate" in page.text


def test_the_judges_page_states_the_gate_as_set(client, world):  # noqa: F811
    """No gate reads "none" (an empty gate once printed its sentence with blanks for every number); a gate set
    through the API is stated with its numbers."""
    pid = project_with(client, world, [{"prompt": "p", "completions": [{"text": "a"}, {"text": "b"}]}])
    headers = world["admin"]["headers"] | {"Accept": "text/html"}
    judge = add_rules_judge(client, world, pid)

    def gate_sentence() -> str:
        page = client.get(f"/projects/{pid}/judges", headers=headers)
        assert page.status_code == 200
        start = page.text.index('id="gate-limits"')
        return " ".join(page.text[start:page.text.index("</p>", start)].split())

    assert gate_sentence().endswith("Judge gate: none.")
    set_gate = client.put(f"/api/v1/projects/{pid}/ai-policy", headers=world["admin"]["headers"],
                          json={"policy": "shadow", "judge": judge, "threshold": 0.5, "gate": GATE})  # fmt: skip
    assert set_gate.status_code == 200, set_gate.text
    sentence = gate_sentence()
    assert "at least 50 verdicts" in sentence and "at most 0.2 " in sentence and "at least 0.7;" in sentence
