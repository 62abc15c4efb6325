"""The prm kind through the product: trajectories imported, step labels given through the API, a `prm` job that
takes its own `steps` snapshot, the output registered as a `prm` model version, then a `score` job that uses that
version as its reward model (a policy version is refused as one)."""

from __future__ import annotations

import json
import random

import pytest

from app.worker import run_one
from tests.helpers import import_lines, make_project
from trainer.tiny_steps import CITIES, openai_line, stepwise_row, texts, trajectory

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """20 requests with two trajectories each, one of them with a planted (failing) wrong tool call."""
    from trainer.tiny import build_tiny_policy, train_tokenizer

    rng = random.Random(3)
    trajectories = []
    for pair in range(20):
        city = rng.choice(CITIES)
        trajectories += [trajectory(rng, bad=k == pair % 2, city=city, plan=2 * pair + k, failing=True) for k in (0, 1)]
    tokenizer = train_tokenizer(texts([stepwise_row(t) for t in trajectories]), vocab_size=384)
    policy = build_tiny_policy(tmp_path_factory.mktemp("prm-job") / "policy", tokenizer, seed=0)
    return trajectories, policy


@pytest.mark.only_db("sqlite")  # one database is enough: the job path is the same on both; it trains a model
def test_prm_job_from_step_labels_registers_a_prm_that_score_jobs_use(client, users, planted, db):
    trajectories, policy = planted
    admin, rita = users.create("admin", "admin"), users.create("rita", "annotator")
    project = make_project(client, admin, overlap=1)
    base = f"/api/v1/projects/{project['id']}"
    data = "".join(openai_line(t) + "\n" for t in trajectories).encode()
    assert import_lines(client, admin, project["id"], data, "openai-chat").status_code == 200
    labelled = 0
    while (task := client.get(f"{base}/steps/next", headers=rita["headers"])).status_code == 200:
        task = task.json()
        final = task["steps"][-1]["content"]
        bad = next(t for t in trajectories if t["continuation"][-1]["content"] == final)["bad_step"]
        labels = [{"label": "good" if i != bad else "bad"} if bad is None or i <= bad else {"label": None}
                  for i in range(len(task["steps"]))]  # fmt: skip
        saved = client.post(f"{base}/trajectories/{task['completion_id']}/step-labels", json={"labels": labels},
                            headers=rita["headers"])  # fmt: skip
        assert saved.status_code == 201, saved.text
        labelled += 1
    assert labelled == len(trajectories)

    registered = client.post("/api/v1/models", headers=admin["headers"],
                             json={"name": "tiny-policy", "path": str(policy), "kind": "policy"})  # fmt: skip
    assert registered.status_code == 201, registered.text
    params = {"snapshot": {"split": {"test_fraction": 0.3}}, "max_steps": 20, "bad_step_weight": 4.0}
    created = client.post("/api/v1/jobs", headers=admin["headers"], json={
        "kind": "prm", "project_id": project["id"], "base_model": registered.json()["id"], "params": params})
    assert created.status_code == 202, created.text
    assert run_one("w1") == created.json()["id"]
    job = client.get(f"/api/v1/jobs/{created.json()['id']}", headers=admin["headers"]).json()
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert metrics["train/trajectories"] + metrics["eval/trajectories"] == len(trajectories)
    # the figures are there (learning itself is shown on more rows by tests/trainer/test_prm.py and bench/steps.py)
    assert all(0.0 <= metrics[f"eval/{name}"] <= 1.0 for name in ("step_accuracy", "first_error_accuracy"))
    versions = client.get("/api/v1/models", headers=admin["headers"], params={"kind": "prm"}).json()
    items = versions["items"] if isinstance(versions, dict) else versions
    version = next(v for v in items if v["id"] == job["result"]["model_version_id"])
    assert version["kind"] == "prm"

    refused = client.post("/api/v1/jobs", headers=admin["headers"], json={
        "kind": "score", "project_id": project["id"], "reward_model": registered.json()["id"]})
    assert refused.status_code == 422 and "not a reward model" in refused.text
    score = client.post("/api/v1/jobs", headers=admin["headers"], json={
        "kind": "score", "project_id": project["id"], "reward_model": version["id"], "params": {"prm_outcome": "last"}})
    assert score.status_code == 202, score.text
    assert run_one("w1") == score.json()["id"]
    scored = client.get(f"/api/v1/jobs/{score.json()['id']}", headers=admin["headers"]).json()
    assert scored["status"] == "succeeded", scored
    assert scored["result"]["metrics"]["scores/count"] == len(trajectories)
    # a trajectory is scored step by step on its stored continuation (not its final text alone)
    from app.jobs.trainer_child import job_dir
    from app.models import Completion, Prompt
    from app.store import local_path
    from trainer.prm import ProcessRewardScorer

    rows = [json.loads(line) for line in (job_dir(scored["id"]) / "output" / "scores.jsonl").read_text().splitlines()]
    scorer = ProcessRewardScorer(local_path(version["path"]), outcome="last")
    db.rollback()
    completions = [db.get(Completion, row["completion_id"]) for row in rows]
    prompts = [db.get(Prompt, c.prompt_id).value for c in completions]
    direct = scorer(prompts, [c.meta["messages"] for c in completions])
    assert [row["score"] for row in rows] == pytest.approx(direct, abs=1e-5)
    assert client.post("/api/v1/jobs", headers=admin["headers"], json={
        "kind": "score", "project_id": project["id"], "reward_model": version["id"],
        "params": {"prm_outcome": "max"}}).status_code == 422
