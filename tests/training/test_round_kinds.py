"""Every policy update kind a round may use (the kind table's round_update), end to end in a round, and honest
evaluation pairs.

Each test runs one round on tiny models with simulated raters (the fixtures of test_rounds: the longer answer
wins), with the recipe's policy update set to the kind, and checks the round's figures. Evaluation pairs: the two
versions sample the evaluation prompts with different seeds, and a pair whose two answers are one text is never
served to a rater: it is recorded (flagged identical, required 0) and counted apart (`identical_pairs`)."""

from __future__ import annotations

import pytest

from app.jobs import runner
from app.training.kinds import POLICY_UPDATES
from app.worker import HANDLERS
from tests.training.test_rounds import FAST, loop, rounds, tiny_models  # noqa: F401 (fixtures)

TINY_UPDATES = {
    "kto": FAST,
    "ppo": {"max_steps": 1, "per_device_train_batch_size": 2, "num_ppo_epochs": 1, "max_new_tokens": 4,
            "logging_steps": 1},
    "grpo": {"max_steps": 1, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 4,
             "logging_steps": 1},
    "rloo": {"max_steps": 1, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 4,
             "logging_steps": 1},
}  # fmt: skip
"""The smallest run of each kind: one or two optimizer steps on a handful of prompts."""


def round_shape(kind: str) -> tuple:
    """What the app asks of a kind's table entry (app/training/kinds.py: per-kind behaviour comes from these fields,
    never from the name): two kinds with one shape take the same path through a round, only their trainers differ
    (each trainer is tested on its own in tests/trainer)."""
    from dataclasses import asdict

    from trainer.params import KIND_INFO

    own = {"args", "entry", "title", "key_params"}  # the trainer's side, not the app's
    return tuple(sorted((k, str(v)) for k, v in asdict(KIND_INFO[kind]).items() if k not in own))


ROUND_KINDS = sorted({round_shape(kind): kind for kind in sorted(TINY_UPDATES, reverse=True)}.values())
"""One update kind per shape, the first by name (grpo stands for rloo: the same entry but for the trainer), run
through a whole round below: a round is a minute of CPU per kind."""


def rate_all(client, raters, project_id, served: list[list[str]]) -> None:
    """Each simulated rater ranks every task it gets, the longer answer first; the texts shown are recorded."""
    for rater in raters:
        while (
            task := client.get(f"/api/v1/projects/{project_id}/tasks/next", headers=rater["headers"])
        ).status_code != 204:
            options = task.json()["options"]
            served.append([o["text"] for o in options])
            ranking = [[o["id"]] for o in sorted(options, key=lambda o: -len(o["text"]))]
            response = client.post(f"/api/v1/assignments/{task.json()['assignment_id']}/judgment",
                                   json={"ranking": ranking}, headers=rater["headers"])  # fmt: skip
            assert response.status_code in (200, 201), response.text


def drive(client, loop, served: list[list[str]], limit: int = 60) -> dict:  # noqa: F811
    """Run jobs, the rounds idle task and the raters until round 1 is done or failed."""
    from app.training.rounds import tick

    for _ in range(limit):
        state = rounds(client, loop)
        if state[0]["status"] in ("done", "failed"):
            return state[0]
        if runner.run_one("w1", HANDLERS) is None:
            rate_all(client, loop["raters"], loop["project"]["id"], served)
            tick("w1")
    raise AssertionError(f"not reached: {rounds(client, loop)}")


def test_every_round_update_kind_is_covered():
    assert set(POLICY_UPDATES) - {"dpo"} == set(TINY_UPDATES), (
        "a new round update kind needs a round test here"
    )
    # Every kind's shape has a kind run end to end; two kinds share a shape only where their entries differ in the
    # trainer's fields alone (so a new field the app reads splits them, and both run again).
    assert {round_shape(kind) for kind in TINY_UPDATES} == {round_shape(kind) for kind in ROUND_KINDS}
    assert "grpo" in ROUND_KINDS and "rloo" not in ROUND_KINDS and len(ROUND_KINDS) == 3


@pytest.mark.only_db(
    "sqlite"
)  # a round per kind is minutes of CPU; test_rounds runs rounds on both databases
@pytest.mark.parametrize("kind", ROUND_KINDS)
def test_a_round_with_each_update_kind_runs_end_to_end(client, loop, kind):  # noqa: F811
    from app.db import session_scope
    from app.judgments.identical import IDENTICAL
    from app.models import Comparison, Completion, Job

    headers = loop["engineer"]["headers"]
    recipe = client.put(f"{loop['url']}/recipe", headers=headers,
                        json={"policy_update": kind, "update_params": TINY_UPDATES[kind], "auto_after_previous": False,
                              "score_before_rating": False, "retrain_reward": False})  # fmt: skip
    assert recipe.status_code == 200, recipe.text
    served: list[list[str]] = []
    assert client.post(loop["url"], headers=headers).status_code == 202
    done = drive(client, loop, served)
    assert done["status"] == "done", done.get("error")

    jobs = {j: client.get(f"/api/v1/jobs/{j}", headers=headers).json() for j in done["job_ids"]}
    assert kind in {j["kind"] for j in jobs.values()} and all(
        j["status"] == "succeeded" for j in jobs.values()
    )
    assert done["new_policy_version_id"] not in (None, done["policy_version_id"])
    metrics = done["metrics"]
    assert metrics["judgments"] >= 3 and metrics["score_mean"] is not None
    assert metrics["identical_pairs"] >= 0 and metrics["battles"] + metrics["identical_pairs"] > 0
    if metrics["battles"]:
        low, high = metrics["win_rate_ci"]
        assert low <= metrics["win_rate"] <= high
    # The two versions sampled the evaluation prompts with different seeds.
    with session_scope() as db:
        eval_jobs = [db.get(Job, done["jobs"][step]) for step in ("eval_previous", "eval")]
        assert len({job.params["seed"] for job in eval_jobs}) == 2
        versions = {done["policy_version_id"], done["new_policy_version_id"]}
        new_against_old = 0
        for comparison in db.query(Comparison).filter(Comparison.id.in_(done["eval_comparison_ids"])):
            completions = db.query(Completion).filter(Completion.id.in_(comparison.completion_ids)).all()
            texts = {c.text.strip() for c in completions}
            new_against_old += {c.model_version_id for c in completions} == versions
            identical = bool((comparison.meta or {}).get(IDENTICAL))
            assert identical == (len(texts) == 1)
            assert (
                (comparison.required == 0 and comparison.n_judgments == 0)
                if identical
                else comparison.n_judgments > 0
            )
    # Every new-against-old pair is a human battle or an identical pair counted apart.
    assert metrics["battles"] + metrics["identical_pairs"] == new_against_old
    # No rater was ever shown two copies of one text.
    assert served and all(len(set(texts)) == len(texts) for texts in served)
