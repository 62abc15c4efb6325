"""Judges end to end: a judge job stores AI judgments once, measured against the humans; the AI policies
(shadow, prelabel, route) in the claim path; raters never see AI verdicts; exports leave them out unless asked;
agreement, kappa, calibration and position bias against a direct computation."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sqlalchemy import func, select

from app.worker import run_one
from tests.helpers import import_lines, make_project


def lines(rows) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def math_rows(n: int, ties: int = 0, prefix: str = "q"):
    """n prompts with one right and one wrong answer (the right one first for even i), then `ties` prompts whose
    two answers are both right (the rules judge cannot tell them apart)."""
    rows = []
    for i in range(n):
        right, wrong = f"The answer is {2 * i}", f"The answer is {2 * i + 1}"
        pair = [right, wrong] if i % 2 == 0 else [wrong, right]
        rows.append({"prompt": f"What is {i} + {i}?", "external_id": f"{prefix}{i}", "reference": {"answer": 2 * i},
                     "completions": [{"text": t, "model": "m"} for t in pair]})  # fmt: skip
    for i in range(n, n + ties):
        rows.append({"prompt": f"What is {i} + {i}?", "external_id": f"{prefix}{i}", "reference": {"answer": 2 * i},
                     "completions": [{"text": f"{2 * i}", "model": "m"}, {"text": f"It is {2 * i}", "model": "m"}]})  # fmt: skip
    return rows


def rate_truthfully(client, rater, project_id, limit: int = 1000) -> list[int]:
    """A rater who ranks the right answer (the one holding 2i) first; returns the comparison ids judged."""
    done = []
    for _ in range(limit):
        response = client.get(f"/api/v1/projects/{project_id}/tasks/next", headers=rater["headers"])
        if response.status_code == 204:
            break
        task = response.json()
        i = int(task["prompt"].split()[2]) if isinstance(task["prompt"], str) else None
        right = [o["id"] for o in task["options"] if o["text"].endswith(str(2 * i))]
        best = right[0]
        ranking = [[best], [o["id"] for o in task["options"] if o["id"] != best]]
        submitted = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", json={"ranking": ranking},
                                headers=rater["headers"])  # fmt: skip
        assert submitted.status_code in (200, 201), submitted.text
        done.append(task["comparison_id"])
    return done


@pytest.fixture
def world(client, users):
    admin = users.create("root", "admin")
    engineer = users.create("eve", "engineer")
    raters = [users.create(f"ann{i}", "annotator") for i in range(2)]
    return {"admin": admin, "engineer": engineer, "raters": raters}


def project_with(client, world, rows, **settings) -> int:
    project = make_project(client, world["admin"], name=settings.pop("name", "Math"), **settings)
    response = import_lines(client, world["admin"], project["id"], lines(rows))
    assert response.status_code == 200, response.text
    return project["id"]


def add_rules_judge(client, world, pid, name="rules") -> int:
    response = client.post(f"/api/v1/projects/{pid}/judges", json={"name": name, "method": "rules"},
                           headers=world["engineer"]["headers"])  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def judge_job(client, world, pid, judge, scope="open") -> dict:
    response = client.post("/api/v1/jobs", json={"kind": "judge", "project_id": pid,
                                                 "params": {"judge": judge, "scope": scope}},
                           headers=world["engineer"]["headers"])  # fmt: skip
    assert response.status_code == 202, response.text
    assert run_one("w1") == response.json()["id"]
    job = client.get(f"/api/v1/jobs/{response.json()['id']}", headers=world["engineer"]["headers"]).json()
    assert job["status"] == "succeeded", job
    return job


def ai_rows(db, pid) -> int:
    from app.models import Judgment

    db.rollback()  # a new read transaction: see what the app committed since
    return db.scalar(select(func.count()).select_from(Judgment).where(Judgment.project_id == pid,
                                                                      Judgment.source == "ai"))  # fmt: skip


def test_a_truthful_judge_measured_against_truthful_raters_once(client, world, db):
    pid = project_with(client, world, math_rows(10))
    rate_truthfully(client, world["raters"][0], pid)
    add_rules_judge(client, world, pid)
    put = client.put(f"/api/v1/projects/{pid}/ai-policy", json={"policy": "shadow"}, headers=world["admin"]["headers"])
    assert put.status_code == 200 and put.json()["policy"] == "shadow"
    job = judge_job(client, world, pid, "rules", scope="judged")
    assert job["result"]["stored"] == 10 and job["result"]["counted"] == 0
    assert ai_rows(db, pid) == 10

    figures = client.get(f"/api/v1/projects/{pid}/judges", headers=world["engineer"]["headers"]).json()
    assert figures["policy"] == "shadow"
    agreement = figures["judges"][0]["agreement"][0]
    assert agreement["compared"] == 10 and agreement["accuracy"] == 1.0 and agreement["kappa"] == pytest.approx(1.0)
    assert agreement["alpha"] == pytest.approx(1.0) or agreement["alpha"] is None or agreement["alpha"] > 0.9
    assert agreement["position_bias"] is None  # rules see no positions
    assert agreement["threshold_for_95"]["share"] == 1.0

    # the review queue: a rater confirms one AI label and flips another; the judge's figures still measure the judge
    rater = world["raters"][1]["headers"]
    queue = client.get(f"/api/v1/projects/{pid}/ai-review", headers=rater).json()["verdicts"]
    assert len(queue) == 10 and all(v["ai_ranking"] and v["confidence"] >= 0.5 for v in queue)
    assert client.post(f"/api/v1/projects/{pid}/ai-review/{queue[0]['id']}", json={"decision": "confirm"},
                       headers=rater).json()["reviewed"] == "confirmed"  # fmt: skip
    assert client.post(f"/api/v1/projects/{pid}/ai-review/{queue[1]['id']}", json={"decision": "flip"},
                       headers=rater).json()["reviewed"] == "flipped"  # fmt: skip
    again = client.post(f"/api/v1/projects/{pid}/ai-review/{queue[1]['id']}", json={"decision": "flip"}, headers=rater)
    assert again.status_code == 422
    from app.models import Judgment

    db.rollback()
    flipped = db.scalar(select(Judgment).where(Judgment.comparison_id == queue[1]["comparison_id"],
                                               Judgment.source == "ai"))  # fmt: skip
    assert flipped.ranking == list(reversed(queue[1]["ai_ranking"]))
    assert len(client.get(f"/api/v1/projects/{pid}/ai-review", headers=rater).json()["verdicts"]) == 8
    assert "Review AI labels" in client.get(f"/projects/{pid}/ai-review", headers=rater).text
    agreement = client.get(f"/api/v1/projects/{pid}/judges", headers=world["engineer"]["headers"]).json()
    agreement = agreement["judges"][0]["agreement"][0]
    assert agreement["accuracy"] == 1.0 and agreement["reviewed"] == 2 and agreement["flipped"] == 1

    again = judge_job(client, world, pid, "rules", scope="all")  # judging again adds no second row
    assert again["result"]["stored"] == 0 and ai_rows(db, pid) == 10

    # exports leave AI judgments out by default; asked, they add a vote to every comparison
    def export(filters):
        response = client.post(f"/api/v1/projects/{pid}/datasets", json={"format": "pairs", "filters": filters,
                                                                         "split": {"test_fraction": 0.0}},
                               headers=world["engineer"]["headers"])  # fmt: skip
        assert response.status_code in (200, 201, 202), response.text
        run_one("w1")
        dataset = response.json()
        body = client.get(f"/api/v1/datasets/{dataset['id']}/files/train.jsonl", headers=world["engineer"]["headers"])
        return [json.loads(line) for line in body.text.splitlines()]

    human_only = export({})
    assert {r["n_votes"] for r in human_only} == {1}
    assert all(r["sources"] == ["human"] and r["ai_confidence"] is None for r in human_only)
    with_ai = export({"sources": ["human", "ai"]})
    assert {r["n_votes"] for r in with_ai} == {2}  # every pair carries its sources and the AI vote's confidence
    assert all(r["sources"] == ["ai", "human"] and r["ai_confidence"] == pytest.approx(0.95) for r in with_ai)

    page = client.get(f"/projects/{pid}/judges", headers=world["engineer"]["headers"])
    assert page.status_code == 200 and "Agreement with the humans" in page.text and "1.000" in page.text


def test_raters_never_see_ai_verdicts(client, world):
    pid = project_with(client, world, math_rows(4))
    add_rules_judge(client, world, pid)
    judge_job(client, world, pid, "rules")
    rater = world["raters"][0]
    assert client.get(f"/api/v1/projects/{pid}/judges", headers=rater["headers"]).status_code == 403
    assert client.get(f"/projects/{pid}/judges", headers=rater["headers"]).status_code in (302, 303, 403)
    task = client.get(f"/api/v1/projects/{pid}/tasks/next", headers=rater["headers"])
    assert task.status_code == 200
    text = task.text.lower()
    assert "confidence" not in text and '"ai"' not in text and "judge" not in text
    page = client.get(f"/projects/{pid}/annotate", headers=rater["headers"])
    assert "AI judge" not in page.text and "confidence" not in page.text.lower()


def test_prelabel_counts_a_confident_verdict_as_one_vote_and_never_overfills(client, world, db):
    from app.models import Comparison

    pid = project_with(client, world, math_rows(4), overlap=2, max_overlap=2)
    judge_id = add_rules_judge(client, world, pid)
    # two raters hold the two slots of the first comparison before the judge runs
    a, b = world["raters"]
    first = client.get(f"/api/v1/projects/{pid}/tasks/next", headers=a["headers"]).json()
    second = client.get(f"/api/v1/projects/{pid}/tasks/next", headers=b["headers"]).json()
    assert first["comparison_id"] == second["comparison_id"]
    put = client.put(f"/api/v1/projects/{pid}/ai-policy", json={"policy": "prelabel", "judge": judge_id,
                                                                "threshold": 0.9}, headers=world["admin"]["headers"])  # fmt: skip
    assert put.status_code == 200, put.text
    job = judge_job(client, world, pid, "rules")
    assert job["result"]["stored"] == 4 and job["result"]["counted"] == 3  # the full one got no vote
    db.rollback()  # a new read transaction: see what the app committed since
    rows = {c.id: c for c in db.scalars(select(Comparison).where(Comparison.project_id == pid))}
    assert rows[first["comparison_id"]].n_judgments == 0 and rows[first["comparison_id"]].n_leases == 2
    assert all(c.n_judgments == 1 and c.required == 2 for i, c in rows.items() if i != first["comparison_id"])
    for rater, task in ((a, first), (b, second)):  # the raters finish; then each other comparison needs one human
        options = [o["id"] for o in task["options"]]
        client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", json={"ranking": [[options[0]], [options[1]]]},
                    headers=rater["headers"])  # fmt: skip
    assert len(rate_truthfully(client, a, pid)) == 3
    assert client.get(f"/api/v1/projects/{pid}/tasks/next", headers=b["headers"]).status_code == 204
    db.rollback()  # a new read transaction: see what the app committed since
    final = [(c.n_judgments, c.required, c.n_leases) for c in db.scalars(select(Comparison).where(Comparison.project_id == pid))]
    assert all(c == (2, 2, 0) for c in final), final


def test_route_completes_the_confident_and_sends_the_uncertain_to_humans_first(client, world, db):
    from app.models import Comparison

    pid = project_with(client, world, math_rows(4, ties=2), overlap=2, max_overlap=2)
    judge_id = add_rules_judge(client, world, pid)
    client.put(f"/api/v1/projects/{pid}/ai-policy", json={"policy": "route", "judge": "rules"},
               headers=world["admin"]["headers"])  # fmt: skip
    job = judge_job(client, world, pid, judge_id)
    assert job["result"] | {} and job["result"]["counted"] == 4 and job["result"]["routed_to_humans"] == 2
    db.rollback()  # a new read transaction: see what the app committed since
    comparisons = list(db.scalars(select(Comparison).where(Comparison.project_id == pid).order_by(Comparison.id)))
    confident, uncertain = comparisons[:4], comparisons[4:]
    assert all(c.n_judgments == c.required == 1 for c in confident)
    assert all(c.n_judgments == 0 and c.required == 2 and c.score_gap == 0.0 for c in uncertain)
    served = rate_truthfully(client, world["raters"][0], pid)
    assert sorted(served) == sorted(c.id for c in uncertain)  # humans see only the uncertain ones


def test_agreement_calibration_kappa_and_position_bias_match_a_direct_computation(client, world, db):
    """400 comparisons with a planted better answer; three raters who follow it 80% of the time; judges written
    straight through store_verdicts: the truth itself, a coin, and a position-biased one."""
    from app.judges.service import create_judge, create_judge_job, judge_agreement, store_verdicts
    from app.models import Comparison, Judgment, Project, User

    n = 400
    pid = project_with(client, world, [{"prompt": f"p{i}", "external_id": f"x{i}",
                                        "completions": [{"text": f"a{i}"}, {"text": f"b{i}"}]} for i in range(n)])  # fmt: skip
    project = db.get(Project, pid)
    comparisons = list(db.scalars(select(Comparison).where(Comparison.project_id == pid).order_by(Comparison.id)))
    rng = random.Random(7)
    truth = {c.id: rng.choice(c.completion_ids) for c in comparisons}
    raters = [db.scalar(select(User).where(User.username == name)) for name in ("ann0", "ann1", "eve")]
    human: dict[int, list[int]] = {}
    for c in comparisons:
        for rater in raters:
            best = truth[c.id] if rng.random() < 0.8 else next(x for x in c.completion_ids if x != truth[c.id])
            other = next(x for x in c.completion_ids if x != best)
            db.add(Judgment(comparison_id=c.id, project_id=pid, rater_id=rater.id, ranking=[[best], [other]],
                            source="human", top_completion_id=best))  # fmt: skip
            human.setdefault(c.id, []).append(best)
    db.flush()
    majority = {c: max(set(v), key=v.count) for c, v in human.items()}

    def verdicts(pick, confidence, p_first=()):
        out = []
        for c in comparisons:
            best = pick(c)
            other = next(x for x in c.completion_ids if x != best)
            out.append({"comparison_id": c.id, "ranking": [[best], [other]], "confidence": confidence(c),
                        "p_first": list(p_first), "pairs": []})  # fmt: skip
        return out

    conf = {c.id: rng.uniform(0.5, 1.0) for c in comparisons}
    judges = {}
    for name, pick, confidence, p_first in (
        ("truth", lambda c: truth[c.id], lambda c: conf[c.id], ()),
        ("coin", lambda c: rng.choice(c.completion_ids), lambda c: conf[c.id], ()),
        ("first", lambda c: c.completion_ids[0], lambda c: 0.6, (0.9, 0.8)),
    ):
        judge = create_judge(db, project, name, "rules")
        job = create_judge_job(db, project, judge=judge.id)
        given = verdicts(pick, confidence, p_first)
        stored = store_verdicts(db, job, given)
        assert stored["stored"] == n
        judges[name] = (judge, given)
    figures = {f["judge"]: f for f in judge_agreement(db, project)}

    for name, (_judge, given) in judges.items():
        ai = np.array([v["ranking"][0][0] for v in given])
        major = np.array([majority[v["comparison_id"]] for v in given])
        correct = ai == major
        f = figures[name]
        assert f["compared"] == n and f["accuracy"] == pytest.approx(correct.mean())
        # kappa by hand: codes are positions in the stored order
        first = np.array([c.completion_ids[0] for c in comparisons])
        a, b = (ai == first).astype(int), (major == first).astype(int)
        po = np.mean(a == b)
        pe = np.mean(a) * np.mean(b) + (1 - np.mean(a)) * (1 - np.mean(b))
        assert f["kappa"] == pytest.approx((po - pe) / (1 - pe))
        confidences = np.array([v["confidence"] for v in given])
        ece = 0.0
        for low, high in ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)):
            inside = (confidences >= low) & ((confidences < high) | (high == 1.0))
            if inside.any():
                ece += inside.mean() * abs(correct[inside].mean() - confidences[inside].mean())
        assert f["ece"] == pytest.approx(ece)
        t9 = next(t for t in f["thresholds"] if t["threshold"] == 0.9)
        assert t9["share"] == pytest.approx(np.mean(confidences >= 0.9))
    p_major_right = 0.8**3 + 3 * 0.8**2 * 0.2  # the majority of three 80% raters is right this often
    assert figures["truth"]["accuracy"] == pytest.approx(p_major_right, abs=0.06)
    assert figures["truth"]["kappa"] > 0.7
    assert abs(figures["coin"]["kappa"]) < 0.15 and abs(figures["coin"]["accuracy"] - 0.5) < 0.1
    assert figures["first"]["position_bias"] == pytest.approx(0.85)
    assert figures["truth"]["position_bias"] is None
    # alpha with the truth as a coder beats the humans alone; the coin pulls it down
    assert figures["truth"]["alpha"] > figures["truth"]["alpha_humans"] > figures["coin"]["alpha"]


@pytest.mark.only_db("sqlite")
def test_a_round_recipe_names_a_judge_that_labels_the_round_before_humans(client, world, db, tmp_path):
    from app.models import AIVerdict, Round
    from app.training.rounds import tick
    from trainer.tiny import (
        build_tiny_policy,
        build_tiny_reward,
        keyword_pairs,
        keyword_texts,
        train_tokenizer,
    )

    tokenizer = train_tokenizer(keyword_texts(keyword_pairs(32, seed=1)), vocab_size=256)
    paths = {"policy": build_tiny_policy(tmp_path / "policy", tokenizer, seed=0),
             "reward": build_tiny_reward(tmp_path / "reward", tokenizer, seed=0)}  # fmt: skip
    pid = project_with(client, world, math_rows(8), name="Loop")
    eng = world["engineer"]["headers"]
    for kind, path in paths.items():
        response = client.post("/api/v1/models", headers=eng, json={"name": f"tiny-{kind}", "path": str(path),
                                                                   "kind": kind, "project_id": pid})  # fmt: skip
        assert response.status_code == 201, response.text
    made = client.post(f"/api/v1/projects/{pid}/judges", json={"name": "rm", "method": "reward", "model": "tiny-reward"},
                       headers=eng)  # fmt: skip
    assert made.status_code == 201, made.text
    recipe = {"prompts_per_round": 2, "samples_per_prompt": 2, "max_new_tokens": 4, "eval_min_prompts": 2,
              "score_before_rating": False, "judge": "rm"}  # fmt: skip
    assert client.put(f"/api/v1/projects/{pid}/rounds/recipe", json=recipe, headers=eng).status_code == 200
    started = client.post(f"/api/v1/projects/{pid}/rounds", headers=eng)
    assert started.status_code == 202, started.text
    assert set(started.json()["job_ids"].values() if isinstance(started.json()["job_ids"], dict)
               else started.json()["job_ids"]) and "judge" in json.dumps(started.json())  # fmt: skip
    while run_one("w1") is not None:
        pass
    tick("w1")
    db.rollback()
    round_ = db.scalar(select(Round).where(Round.project_id == pid))
    assert round_.status == "rating", (round_.status, round_.error)
    judged = set(db.scalars(select(AIVerdict.comparison_id).where(AIVerdict.project_id == pid)))
    assert judged and judged == set(round_.comparison_ids)


@pytest.mark.only_db("sqlite")
def test_a_generative_judge_per_template_version(client, world, db, tmp_path):
    from app.models import AIVerdict
    from trainer.tiny import build_tiny_policy, keyword_pairs, keyword_texts, train_tokenizer

    tokenizer = train_tokenizer(keyword_texts(keyword_pairs(32, seed=1)), vocab_size=256)
    policy = build_tiny_policy(tmp_path / "policy", tokenizer, seed=0)
    pid = project_with(client, world, math_rows(4))
    rate_truthfully(client, world["raters"][0], pid)
    eng = world["engineer"]["headers"]
    assert client.post("/api/v1/models", headers=eng, json={"name": "tiny-lm", "path": str(policy), "kind": "policy",
                                                            "project_id": pid}).status_code == 201  # fmt: skip
    made = client.post(f"/api/v1/projects/{pid}/judges", json={"name": "lm", "method": "generative",
                                                                "model": "tiny-lm"}, headers=eng)  # fmt: skip
    assert made.status_code == 201, made.text
    bad = client.post(f"/api/v1/projects/{pid}/judges", json={"name": "lm2", "method": "generative", "model": "tiny-lm",
                                                               "params": {"template": "x"}}, headers=eng)  # fmt: skip
    assert bad.status_code == 422
    first = judge_job(client, world, pid, "lm", scope="judged")
    assert first["result"]["stored"] == 4 and first["result"]["template_version"] == 0
    assert 0.0 <= first["result"]["metrics"]["judge/position_bias"] <= 1.0
    template = "Q: {prompt}\nFirst: {response_a}\nSecond: {response_b}\nBetter (A or B)?"
    assert client.put(f"/api/v1/projects/{pid}/judges/template", json={"body": template},
                      headers=eng).json()["version"] == 1  # fmt: skip
    assert client.put(f"/api/v1/projects/{pid}/judges/template", json={"body": "no responses"},
                      headers=eng).status_code == 422  # fmt: skip
    second = judge_job(client, world, pid, "lm", scope="judged")  # a new template version judges again
    assert second["result"]["stored"] == 4 and second["result"]["template_version"] == 1
    db.rollback()
    assert sorted(db.scalars(select(AIVerdict.template_version).where(AIVerdict.project_id == pid))) == [0] * 4 + [1] * 4
    figures = client.get(f"/api/v1/projects/{pid}/judges", headers=eng).json()
    assert figures["template"]["version"] == 1 and figures["template"]["body"] == template
    rows = figures["judges"][0]["agreement"]
    assert [r["template_version"] for r in rows] == [0, 1] and all(r["compared"] == 4 for r in rows)
    assert all(r["position_bias"] is not None for r in rows)


@pytest.mark.only_db("sqlite")
def test_rankforge_train_judge_queues_a_judge_job(client, world):
    from typer.testing import CliRunner

    from app.cli import app as cli_app

    pid = project_with(client, world, math_rows(2))
    add_rules_judge(client, world, pid)
    result = CliRunner().invoke(cli_app, ["train", "judge", "--project", str(pid), "--judge", "rules",
                                          "--param", "scope=all"])  # fmt: skip
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert job["kind"] == "judge" and job["status"] == "queued"
    missing = CliRunner().invoke(cli_app, ["train", "judge", "--project", str(pid)])
    assert missing.exit_code != 0 and "names its judge" in missing.output
