"""A judge backed by a process reward model (method prm) through the product: agent trajectories imported as
comparisons of whole trajectories, a registered `prm` version, a `judge` job; its verdicts are stored as AI judgments
whose ranking is exactly what the PRM's step scores say (outcome = min or last step score, a tie within the margin),
raters never see them, and judging again adds nothing. That a trained PRM judge prefers the good trajectory is
tests/trainer/test_prm.py's (a real training run; here the PRM is trained for a few steps only: cheap)."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from app.worker import run_one
from tests.helpers import import_lines, make_project
from tests.trainer.conftest import run_job, spec_for
from trainer.tiny_steps import CITIES, openai_line, planted_stepwise, stepwise_row, texts, trajectory

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def prm_world(tmp_path_factory):
    """6 requests with two trajectories each (one with a planted failing call), and a tiny PRM (3 steps)."""
    from trainer.tiny import build_tiny_policy, train_tokenizer, write_snapshot

    root = tmp_path_factory.mktemp("prm-judge")
    rng = random.Random(5)
    trajectories = []
    for pair, city in enumerate(rng.sample(CITIES, 6)):  # one request per city: each pair is one comparison
        trajectories += [trajectory(rng, bad=k == pair % 2, city=city, plan=2 * pair + k, failing=True) for k in (0, 1)]
    rows = planted_stepwise(24, seed=1, failing=True)
    tokenizer = train_tokenizer(texts(rows + [stepwise_row(t) for t in trajectories]), vocab_size=384)
    policy = build_tiny_policy(root / "policy", tokenizer, seed=0)
    snapshot = write_snapshot(root / "snapshot", {"train": rows[:16], "test": rows[16:]}, fmt="steps")
    result = run_job(root, spec_for("prm", root / "prm", base_model=str(policy), dataset_path=str(snapshot),
                                    params={"max_steps": 3, "per_device_train_batch_size": 4}))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {"trajectories": trajectories, "policy": policy, "prm": root / "prm"}


@pytest.mark.only_db("sqlite")  # the judge path is the same on both databases; it runs a model
def test_a_prm_judge_stores_verdicts_that_follow_the_prm_scores(client, users, db, prm_world):
    from app.models import AIVerdict, Comparison, Completion, Judgment, Prompt
    from trainer.prm import ProcessRewardScorer, outcome

    admin, eng, rater = users.create("root", "admin"), users.create("eve", "engineer"), users.create("ann", "annotator")
    project = make_project(client, admin, name="Agents")
    pid = project["id"]
    data = "".join(openai_line(t) + "\n" for t in prm_world["trajectories"]).encode()
    assert import_lines(client, admin, pid, data, "openai-chat").status_code == 200
    models = {}
    for kind in ("policy", "prm"):
        made = client.post("/api/v1/models", headers=eng["headers"], json={
            "name": f"tiny-{kind}", "path": str(prm_world[kind]), "kind": kind, "project_id": pid})
        assert made.status_code == 201, made.text
        models[kind] = made.json()["id"]

    base = f"/api/v1/projects/{pid}/judges"
    wrong = client.post(base, headers=eng["headers"], json={"name": "p", "method": "prm", "model": models["policy"]})
    assert wrong.status_code == 422 and "not a prm model" in wrong.text
    bad_param = client.post(base, headers=eng["headers"], json={"name": "p", "method": "prm", "model": models["prm"],
                                                                "params": {"prm_outcome": "max"}})  # fmt: skip
    assert bad_param.status_code == 422 and "prm_outcome" in bad_param.text
    made = client.post(base, headers=eng["headers"], json={"name": "steps", "method": "prm", "model": models["prm"],
                                                           "params": {"prm_outcome": "last", "tie_margin": 0.01}})  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["method"] == "prm" and made.json()["model_version_id"] == models["prm"]

    def judge_job() -> dict:
        response = client.post("/api/v1/jobs", headers=eng["headers"], json={
            "kind": "judge", "project_id": pid, "params": {"judge": "steps", "scope": "open"}})
        assert response.status_code == 202, response.text
        assert response.json()["reward_model_id"] == models["prm"]
        assert run_one("w1") == response.json()["id"]
        job = client.get(f"/api/v1/jobs/{response.json()['id']}", headers=eng["headers"]).json()
        assert job["status"] == "succeeded", job
        return job

    job = judge_job()
    assert job["result"]["stored"] == 6 and job["result"]["counted"] == 0  # the policy is off: measured only

    db.rollback()
    verdicts = list(db.scalars(select(AIVerdict).where(AIVerdict.project_id == pid)))
    assert len(verdicts) == 6 and all(v.method == "prm" and v.model_version_id == models["prm"] for v in verdicts)
    scorer = ProcessRewardScorer(prm_world["prm"])
    for verdict in verdicts:
        comparison = db.get(Comparison, verdict.comparison_id)
        prompt = db.get(Prompt, comparison.prompt_id)
        a, b = sorted(comparison.completion_ids)
        continuations = [db.get(Completion, c).meta["messages"] for c in (a, b)]
        direct = scorer.step_scores([prompt.value] * 2, continuations)  # the PRM on the stored trajectories
        oa, ob = (outcome(scores, "last") for scores in direct)
        detail = verdict.detail["prm"]
        assert detail["outcome"] == "last" and detail["tie_margin"] == 0.01
        assert detail["step_scores"][str(a)] == pytest.approx(direct[0], abs=1e-5)
        assert detail["outcomes"] == {str(a): pytest.approx(oa, abs=1e-5), str(b): pytest.approx(ob, abs=1e-5)}
        judgment = db.get(Judgment, verdict.judgment_id)
        assert judgment.source == "ai" and judgment.rater_id is None
        if abs(oa - ob) <= 0.01:
            assert [sorted(g) for g in judgment.ranking] == [[a, b]] and verdict.confidence == 0.5
        else:
            assert judgment.ranking == ([[a], [b]] if oa > ob else [[b], [a]])
            assert verdict.confidence == pytest.approx((1 + abs(oa - ob)) / 2, abs=1e-6)
        assert verdict.p_first is None  # each trajectory is scored alone: no position

    # raters stay blind to AI verdicts; judging again adds nothing
    task = client.get(f"/api/v1/projects/{pid}/tasks/next", headers=rater["headers"])
    assert task.status_code == 200
    assert not any(word in task.text.lower() for word in ("confidence", '"ai"', "judge", "step_scores"))
    assert client.get(base, headers=rater["headers"]).status_code == 403
    assert judge_job()["result"]["stored"] == 0
    figures = client.get(base, headers=eng["headers"]).json()
    assert [(j["name"], j["method"], j["model_name"]) for j in figures["judges"]] == [("steps", "prm", "tiny-prm")]
