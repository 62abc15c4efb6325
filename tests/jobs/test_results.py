"""Typed job results: a trainer job hands back a result of its output's type with fixed names (result.json, kept in
the job's row under `output`), and the app reads it through one reader; a missing or garbled result fails with a
message that names the file and the problem, never a guessed figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.jobs.trainer_child import RESULT_KEY, stored_result
from app.worker import run_one
from tests.jobs.test_training_jobs import FAST, job, start, tiny_models, world  # noqa: F401 - fixtures
from trainer.results import (
    RESULT_FILE,
    GenerationsResult,
    JudgmentsResult,
    ModelResult,
    ResultError,
    ScoresResult,
    build_result,
    from_dict,
    read_result,
    write_result,
)


def test_a_real_reward_job_hands_back_a_typed_model_result(client, world, db):  # noqa: F811 - fixture
    from app.models import Job

    queued = start(client, world, "reward")
    assert run_one("w1") == queued["id"]
    done = job(client, world, queued["id"])
    assert done["status"] == "succeeded", done
    version = client.get(f"/api/v1/models/{done['result']['model_version_id']}",
                         headers=world["engineer"]["headers"]).json()  # fmt: skip
    on_disk = read_result(version["path"])
    assert isinstance(on_disk, ModelResult) and on_disk.model_kind == "reward" and on_disk.job_kind == "reward"
    assert on_disk.job_id == queued["id"] and on_disk.output_dir == version["path"]
    assert on_disk.train_loss == done["result"]["metrics"]["train/loss_mean"] and on_disk.kl_to_reference is None
    stored = stored_result(db.get(Job, queued["id"]))
    assert stored == on_disk and done["result"][RESULT_KEY]["output"] == "model"


def test_a_real_generate_job_reports_its_kl_under_a_fixed_name(client, world, db, tiny_models):  # noqa: F811
    from app.models import Job

    params = {"num_completions": 2, "max_new_tokens": 4, "max_prompts": 3, "reference_model": str(tiny_models["policy"])}
    queued = start(client, world, "generate", params=params)
    assert run_one("w1") == queued["id"]
    assert job(client, world, queued["id"])["status"] == "succeeded"
    result = stored_result(db.get(Job, queued["id"]))
    assert isinstance(result, GenerationsResult) and result.job_kind == "generate"
    # the policy is its own reference here: a KL of zero, read from the typed result, not from a metric name
    assert result.kl_to_reference == pytest.approx(0.0, abs=1e-4)
    rows = result.read_generations()
    assert len(rows) == 3 and all(len(row["completions"]) == 2 for row in rows)


@pytest.mark.parametrize(("output", "cls"), [("reward", ModelResult), ("policy", ModelResult),
                                             ("generations", GenerationsResult), ("scores", ScoresResult),
                                             ("judgments", JudgmentsResult)])  # fmt: skip
def test_every_result_type_round_trips_through_its_file(tmp_path, output, cls):
    metrics = {"train/loss": 0.5, "eval/kl_to_reference": 0.25, "generate/kl_to_reference": 0.125}
    kl_metric = {"policy": "eval/kl_to_reference", "generations": "generate/kl_to_reference"}.get(output)
    result = build_result(output, job_kind="k", job_id=7, output_dir=tmp_path, metrics=metrics, kl_metric=kl_metric,
                          loss_metric="train/loss")
    write_result(result, tmp_path)
    back = read_result(tmp_path)
    assert type(back) is cls and back == result and back.metrics == metrics
    if cls is ModelResult:
        assert back.model_kind == output and back.train_loss == 0.5
        assert back.kl_to_reference == (0.25 if output == "policy" else None)
    if cls is GenerationsResult:
        assert back.kl_to_reference == 0.125


def test_a_missing_or_garbled_result_fails_clearly(tmp_path):
    with pytest.raises(ResultError, match=r"result\.json is missing"):
        read_result(tmp_path)
    (tmp_path / RESULT_FILE).write_text("{not json")
    with pytest.raises(ResultError, match="is not valid JSON"):
        read_result(tmp_path)
    good = build_result("scores", job_kind="score", job_id=1, output_dir=tmp_path, metrics={}).to_dict()
    for broken, message in [({**good, "output": "weights"}, "unknown output 'weights'"),
                            ({**good, "job_id": "one"}, "field 'job_id'"),
                            ({**good, "kl": 1.0}, r"unknown field\(s\) kl"),
                            ({k: v for k, v in good.items() if k != "output_dir"}, r"missing field\(s\) output_dir"),
                            ([good], "not a JSON object")]:  # fmt: skip
        (tmp_path / RESULT_FILE).write_text(json.dumps(broken))
        with pytest.raises(ResultError, match=message):
            read_result(tmp_path)
    # the score file has one reader, and it names the file and line it cannot read
    scores = from_dict(good)
    assert isinstance(scores, ScoresResult)
    with pytest.raises(ResultError, match=r"scores\.jsonl is missing"):
        scores.read_scores()
    Path(tmp_path / ScoresResult.FILE).write_text('{"completion_id": 3, "score": 0.5}\n{"completion_id": 4, "sc\n')
    with pytest.raises(ResultError, match=r"scores\.jsonl, line 2: not JSON"):
        scores.read_scores()
    Path(tmp_path / ScoresResult.FILE).write_text('{"completion_id": 3, "score": 0.5}\n{"completion_id": 4, "score": -1}\n')
    assert scores.read_scores() == {3: 0.5, 4: -1.0}


def test_a_job_row_with_a_garbled_result_fails_instead_of_guessing(db):
    from app.models import Job

    row = Job(id=99, kind="score", result={RESULT_KEY: {"output": "scores", "job_kind": "score"}})
    with pytest.raises(ResultError, match=r"job 99's result: missing field\(s\)"):
        stored_result(row)
    assert stored_result(Job(id=98, kind="export", result={"metrics": {}})) is None
    assert stored_result(None) is None


def test_training_judge_and_verify_jobs_take_the_same_launcher_params():
    from app.errors import Unprocessable
    from app.jobs.trainer_child import trainer_command
    from app.judges.service import JOB_PARAMS
    from app.training.kinds import split_params
    from app.verifiers.service import check_params
    from trainer.launch import ACCELERATE_CONFIGS

    assert check_params({"launcher": "accelerate", "accelerate_config": "cpu"})["launcher"] == "accelerate"
    for bad, message in [({"launcher": "slurm"}, "params.launcher"), ({"accelerate_config": "nope"}, "accelerate_config")]:
        with pytest.raises(Unprocessable, match=message):
            check_params(bad)
    assert {"launcher", "accelerate_config"} <= set(JOB_PARAMS)
    assert split_params({"launcher": "accelerate", "beta": 0.1}) == ({"launcher": "accelerate"}, {"beta": 0.1})
    command = trainer_command(Path("/w/spec.json"), "accelerate", "cpu")
    assert command[1:3] == ["-m", "accelerate.commands.launch"] and str(ACCELERATE_CONFIGS["cpu"]) in command
    assert command[-3:] == ["-m", "trainer.run", "/w/spec.json"]
