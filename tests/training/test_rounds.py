"""Rounds end to end on tiny models, both databases: the API starts round 1, the worker (run_one + the rounds
idle task) runs its jobs, simulated raters (API clients ranking by a planted rule: the longer answer wins) rate
the round's and the evaluation's comparisons; a failing step stops the round and "retry step" finishes it; the
recipe's trigger starts round 2 by itself; a worker that dies mid-round leaves it to another; two workers never
start the same round twice."""

from __future__ import annotations

import json
import threading
import time

import pytest

from app.jobs import runner
from app.worker import HANDLERS
from tests.helpers import import_lines, make_project

FAST = {"max_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 4, "max_length": 64}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from trainer.tiny import (
        build_tiny_policy,
        build_tiny_reward,
        keyword_pairs,
        keyword_texts,
        train_tokenizer,
    )

    root = tmp_path_factory.mktemp("round-models")
    tokenizer = train_tokenizer(keyword_texts(keyword_pairs(64, seed=1)), vocab_size=384)
    return {"policy": build_tiny_policy(root / "policy", tokenizer, seed=0),
            "reward": build_tiny_reward(root / "reward", tokenizer, seed=0)}  # fmt: skip


def pool(n: int) -> bytes:
    lines = [json.dumps({"prompt": f"Write about topic {i}.", "external_id": f"t{i}",
                         "completions": [{"text": f"short {i}", "model": "seed"},
                                         {"text": f"a much longer answer about topic {i}", "model": "seed"}]})
             for i in range(n)]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def loop(client, users, tiny_models):
    admin = users.create("root", "admin")
    engineer = users.create("eve", "engineer")
    raters = [users.create(f"rater{i}", "annotator") for i in range(2)]
    project = make_project(client, admin, name="Loop", slug="loop")
    assert import_lines(client, admin, project["id"], pool(14)).status_code == 200
    for kind in ("policy", "reward"):
        response = client.post("/api/v1/models", headers=engineer["headers"],
                               json={"name": f"tiny-{kind}", "path": str(tiny_models[kind]), "kind": kind,
                                     "project_id": project["id"]})  # fmt: skip
        assert response.status_code == 201, response.text
    recipe = {"prompts_per_round": 3, "samples_per_prompt": 2, "max_new_tokens": 6, "eval_min_prompts": 4,
              "update_params": FAST, "reward_params": FAST, "auto_after_previous": True}  # fmt: skip
    response = client.put(f"/api/v1/projects/{project['id']}/rounds/recipe", json=recipe, headers=engineer["headers"])
    assert response.status_code == 200, response.text
    return {"admin": admin, "engineer": engineer, "raters": raters, "project": project,
            "url": f"/api/v1/projects/{project['id']}/rounds"}  # fmt: skip


def rate_all(client, raters, project_id) -> int:
    """Each simulated rater ranks every task it gets: the longer answer first (a planted, learnable rule)."""
    done = 0
    for rater in raters:
        while True:
            task = client.get(f"/api/v1/projects/{project_id}/tasks/next", headers=rater["headers"])
            if task.status_code == 204:
                break
            task = task.json()
            options = sorted(task["options"], key=lambda o: -len(o["text"]))
            ranking = [[o["id"]] for o in options]
            response = client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment",
                                   json={"ranking": ranking}, headers=rater["headers"])  # fmt: skip
            assert response.status_code in (200, 201), response.text
            done += 1
    return done


def rounds(client, loop) -> list[dict]:
    return client.get(loop["url"], headers=loop["engineer"]["headers"]).json()["rounds"]


def drive(client, loop, *, until, worker: str = "w1", handlers=None, limit: int = 60) -> list[dict]:
    """Run jobs, the rounds idle task and the raters until `until(rounds)` holds."""
    from app.training.rounds import tick

    for _ in range(limit):
        state = rounds(client, loop)
        if until(state):
            return state
        ran = runner.run_one(worker, handlers or HANDLERS)
        if ran is None:
            rate_all(client, loop["raters"], loop["project"]["id"])
            tick(worker)
    raise AssertionError(f"not reached: {rounds(client, loop)}")


@pytest.mark.only_db("postgresql")  # minutes of CPU: SQLite runs whole rounds in test_round_kinds (four of them)
def test_a_round_runs_end_to_end_a_failed_step_is_retried_and_round_2_starts_by_itself(client, loop):
    headers = loop["engineer"]["headers"]
    started = client.post(loop["url"], headers=headers)
    assert started.status_code == 202, started.text
    first = started.json()
    assert first["number"] == 1 and first["status"] == "generating" and first["trigger"] == "manual"
    assert len(first["prompt_ids"]) == 3 and first["policy_version_id"] is not None
    assert client.post(loop["url"], headers=headers).status_code == 409  # one round at a time

    def broken_dpo(ctx):
        raise RuntimeError("planted failure")

    failing = HANDLERS | {"dpo": broken_dpo}
    state = drive(client, loop, handlers=failing, until=lambda r: r[0]["status"] == "failed")
    failed = state[0]
    policy_job = failed["jobs"]["policy"]
    assert failed["failed_job_id"] == policy_job and "planted failure" in failed["error"]
    stopped = client.get(f"/api/v1/jobs/{failed['jobs']['eval']}", headers=headers).json()
    assert stopped["status"] == "failed" and policy_job in stopped["depends_on"]

    retried = client.post(f"{loop['url']}/1/retry", headers=headers)
    assert retried.status_code == 200 and retried.json()["status"] == "training", retried.text
    state = drive(client, loop, until=lambda r: r[0]["status"] == "done")
    done = state[0]
    jobs = [client.get(f"/api/v1/jobs/{j}", headers=headers).json() for j in done["job_ids"]]
    assert {j["kind"] for j in jobs} == {"generate", "score", "reward", "dpo"} and all(
        j["status"] == "succeeded" for j in jobs)
    assert done["new_policy_version_id"] not in (None, done["policy_version_id"])
    assert done["reward_version_id"] is not None and done["dataset_id"] is not None
    metrics = done["metrics"]
    assert metrics["battles"] >= 4 and 0 <= metrics["win_rate"] <= 1
    low, high = metrics["win_rate_ci"]
    assert low <= metrics["win_rate"] <= high
    assert metrics["judgments"] >= 3 and metrics["reward_accuracy"] is not None
    assert metrics["score_mean"] is not None and done["finished_at"] is not None
    assert isinstance(metrics["kl"], float)  # measured on the evaluation samples against the previous policy
    eval_prompts = set(client.get(f"{loop['url']}/recipe", headers=headers).json()["eval_prompt_ids"])
    assert len(eval_prompts) == 4 and not eval_prompts & set(done["prompt_ids"])
    model = client.get(f"/api/v1/models/{done['new_policy_version_id']}", headers=headers).json()
    assert model["base_version_id"] == done["policy_version_id"] and model["dataset_id"] == done["dataset_id"]
    # the evaluation prompts were never trained on
    from app.db import session_scope
    from app.models import DatasetSnapshot

    with session_scope() as db:
        spec = db.get(DatasetSnapshot, done["dataset_id"]).spec
    assert set(spec["filters"]["exclude_prompt_ids"]) == eval_prompts
    # the trigger (auto_after_previous) started round 2 in the same tick that finished round 1
    second = state[1]
    assert second["number"] == 2 and second["trigger"].startswith("auto") and second["status"] == "generating"
    assert second["policy_version_id"] == done["new_policy_version_id"]
    assert not set(second["prompt_ids"]) & (set(done["prompt_ids"]) | eval_prompts)
    # the rounds page: table, win-rate chart, a start button
    page = client.get(f"/projects/{loop['project']['id']}/rounds", headers=loop["admin"]["headers"] | {"Accept": "text/html"})
    assert page.status_code == 200 and "<svg" in page.text and "Win rate" in page.text
    assert 'id="chart-versions"' in page.text and model["name"] in page.text  # every version on the leaderboard
    detail = client.get(f"/projects/{loop['project']['id']}/rounds/1", headers=loop["admin"]["headers"] | {"Accept": "text/html"})
    assert detail.status_code == 200 and 'id="round-pairs"' in detail.text and 'id="eval-pairs"' in detail.text
    assert "rater0" in detail.text and "Write about topic" in detail.text
    # cancel: the round's pending jobs are cancelled
    cancelled = client.post(f"{loop['url']}/2/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert all(client.get(f"/api/v1/jobs/{j}", headers=headers).json()["status"] == "cancelled"
               for j in cancelled.json()["job_ids"])  # fmt: skip


def test_a_worker_dies_mid_round_and_another_completes_it(client, loop, monkeypatch):
    from app.config import get_settings
    from app.db import session_scope
    from app.jobs import service

    headers = loop["engineer"]["headers"]
    assert client.post(loop["url"], headers=headers).status_code == 202
    with session_scope(write=True) as db:  # a worker claims the generate job, then dies (never heartbeats again)
        claimed = service.claim(db, "dead-worker")
        assert claimed is not None and claimed.kind == "generate"
    monkeypatch.setenv("RANKFORGE_WORKER_STALE_SECONDS", "1")
    get_settings.cache_clear()
    time.sleep(1.5)
    state = drive(client, loop, worker="rescuer", until=lambda r: r[0]["status"] in ("rating", "training"))
    generate = client.get(f"/api/v1/jobs/{state[0]['jobs']['generate']}", headers=headers).json()
    assert generate["status"] == "succeeded" and generate["attempts"] == 2


def test_two_workers_never_start_the_same_round_twice(client, loop, db):
    from sqlalchemy import select

    from app.models import Project, Round
    from app.training.rounds import tick

    project = db.get(Project, loop["project"]["id"])
    project.round_recipe = project.round_recipe | {"auto_every_minutes": 1, "auto_min_judgments": 1}
    db.commit()
    rate_all(client, loop["raters"], loop["project"]["id"])  # new judgments: the trigger is due
    results: dict[str, list] = {}
    threads = [threading.Thread(target=lambda w=w: results.__setitem__(w, tick(w))) for w in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(r) for r in results.values()) == [0, 1], results
    assert tick("w2") == []  # w1 holds the lease
    db.expire_all()
    assert [r.number for r in db.scalars(select(Round).where(Round.project_id == project.id))] == [1]


def test_cli_round_recipe_start_and_list(loop):
    from typer.testing import CliRunner

    from app.cli import app

    runner = CliRunner()

    def cli(*args: str, code: int = 0):
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.output, result.exception)
        return result.stdout if code == 0 else result.output

    recipe = json.loads(cli("round", "recipe", "loop", "--set", "prompts_per_round=2", "--set", "policy_update=kto",
                            "--json"))  # fmt: skip
    assert recipe["prompts_per_round"] == 2 and recipe["policy_update"] == "kto"
    assert "no_such_setting" in cli("round", "recipe", "loop", "--set", "no_such_setting=1", code=1)
    started = json.loads(cli("round", "start", "loop", "--json"))
    assert started["number"] == 1 and started["status"] == "generating" and len(started["prompt_ids"]) == 2
    assert "still generating" in cli("round", "start", "loop", code=1)
    listed = cli("round", "list", "loop")
    assert "generating" in listed.splitlines()[1]


def test_a_round_finishes_even_when_the_next_one_cannot_start(client, loop, db):
    """The trigger wants round 2 but the pool is used up: round 1 still ends done (the failed start is undone
    alone), and the round's finish is not repeated on the next tick."""
    from sqlalchemy import select

    from app.models import Project, Prompt, Round, WebhookDelivery, WebhookEndpoint, utcnow
    from app.training.rounds import tick

    project = db.get(Project, loop["project"]["id"])
    every = list(db.scalars(select(Prompt.id).where(Prompt.project_id == project.id)))
    db.add(Round(project_id=project.id, number=1, status="evaluating", prompt_ids=every, started_at=utcnow(),
                 stage_started_at=utcnow()))  # fmt: skip
    db.add(WebhookEndpoint(project_id=project.id, url="https://hooks.example.com/rf", events=["round.finished"],
                           secret="whsec_test"))  # fmt: skip
    db.commit()
    assert tick("w1") == [(project.id, 1, "done")]
    assert tick("w1") == []
    db.expire_all()
    assert [r.status for r in db.scalars(select(Round).where(Round.project_id == project.id))] == ["done"]
    events = list(db.scalars(select(WebhookDelivery).where(WebhookDelivery.event_type == "round.finished")))
    assert len(events) == 1 and events[0].payload["data"]["number"] == 1  # sent once, by the webhooks worker


def test_two_starts_at_once_make_one_round(loop):
    """Two "start next round" at the same moment: one round, the other start answers 409."""
    from app.db import session_scope
    from app.errors import Conflict
    from app.models import Project
    from app.training.rounds import start_round

    barrier, outcomes = threading.Barrier(2), []

    def start():
        barrier.wait()
        try:
            with session_scope(write=True) as db:
                outcomes.append(start_round(db, db.get(Project, loop["project"]["id"])).number)
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, outcomes)) == ["1", "conflict"], outcomes


def test_a_verifiable_projects_round_verifies_its_new_policy_on_the_evaluation_prompts(client, loop, db):
    """The chain a round queues when its prompts carry references: a verify job waits for the policy update, samples
    the new version (base_model_from) on the evaluation prompts, and the round waits for it before it finishes."""
    from app.jobs import service as jobs_service
    from app.models import Job, Project, Round
    from app.training.round_recipe import get_recipe
    from app.training.round_views import round_metrics
    from app.training.rounds import STEP_STAGE, _start_training, start_round

    admin = loop["admin"]
    lines = [json.dumps({"prompt": f"What is {i} + {i}?", "external_id": f"sum-{i}", "reference": {"answer": 2 * i},
                         "completions": [{"text": str(2 * i), "model": "seed"}, {"text": "no idea", "model": "seed"}]})
             for i in range(24)]  # fmt: skip
    assert import_lines(client, admin, loop["project"]["id"], ("\n".join(lines) + "\n").encode()).status_code == 200
    project = db.get(Project, loop["project"]["id"])
    round_ = start_round(db, project)
    recipe = get_recipe(project)
    _start_training(db, round_, project, recipe)
    db.flush()
    verify = db.get(Job, round_.jobs["verify"])
    assert verify.kind == "verify" and STEP_STAGE["verify"] == "evaluating"
    assert verify.params["base_model_from"] == round_.jobs["policy"] and verify.params["round_id"] == round_.id
    assert sorted(verify.params["prompt_ids"]) == sorted(get_recipe(project).eval_prompt_ids)
    assert round_.jobs["policy"] in jobs_service.dependencies(db, verify.id)
    # Its pass rates become the round's figures once it has run.
    verify.status, verify.result = "succeeded", {"pass_rates": {"pass_at_1": 0.25, "pass_at_1_ci": [0.1, 0.4],
                                                                "pass_at_k": 0.5, "pass_at_k_ci": [0.3, 0.7], "k": 4}}
    assert round_metrics(db, db.get(Round, round_.id))["pass_at_1"] == 0.25


def test_a_dpo_round_trains_reward_model_and_policy_on_one_snapshot(client, loop, db):
    """The DPO update of a round takes the snapshot its reward job built (dataset_from) instead of building the same
    snapshot a second time; the snapshot becomes the update's dataset once the reward job has it."""
    from types import SimpleNamespace

    from app.models import DatasetSnapshot, Job, Project
    from app.training.handlers import _inputs_from_dependencies
    from app.training.round_recipe import get_recipe
    from app.training.rounds import _start_training, start_round

    project = db.get(Project, loop["project"]["id"])
    round_ = start_round(db, project)
    _start_training(db, round_, project, get_recipe(project))
    db.flush()
    reward, policy = db.get(Job, round_.jobs["reward"]), db.get(Job, round_.jobs["policy"])
    assert policy.kind == "dpo" and "snapshot" in reward.params
    assert policy.params["dataset_from"] == reward.id and "snapshot" not in policy.params
    snapshot = DatasetSnapshot(project_id=project.id, format="pairs", spec={"format": "pairs"}, status="ready")
    db.add(snapshot)
    db.flush()
    reward.status, reward.result, snapshot_id, policy_id = "succeeded", {"dataset_id": snapshot.id}, snapshot.id, policy.id
    db.commit()
    _inputs_from_dependencies(SimpleNamespace(job_id=policy_id))
    db.expire_all()
    assert db.get(Job, policy_id).dataset_id == snapshot_id
