"""Training jobs end to end: API -> queue -> worker -> `python -m trainer.run` child -> model registry.

Real tiny models (built once per session with trainer.tiny), real snapshots of imported judgments, real
child processes; both databases. Each job trains a handful of steps so a test takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.worker import run_one
from tests.helpers import import_lines, make_project

ROOT = Path(__file__).resolve().parents[2]
FAST = {"max_steps": 3, "logging_steps": 1, "per_device_train_batch_size": 4, "max_length": 64}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from trainer.tiny import (
        build_tiny_policy,
        build_tiny_reward,
        keyword_pairs,
        keyword_texts,
        train_tokenizer,
    )

    root = tmp_path_factory.mktemp("tiny-models")
    tokenizer = train_tokenizer(keyword_texts(keyword_pairs(64, seed=1)), vocab_size=384)
    return {"policy": build_tiny_policy(root / "policy", tokenizer, seed=0),
            "reward": build_tiny_reward(root / "reward", tokenizer, seed=0)}  # fmt: skip


def keyword_native(n: int, seed: int = 1) -> bytes:
    """Imported judgments where the chosen answer says "please": a pairs snapshot with a learnable signal."""
    from trainer.tiny import keyword_pairs

    lines = [json.dumps({"prompt": row["prompt"].strip(), "external_id": f"k{seed}-{i}", "ranking": [[0], [1]],
                         "completions": [{"text": row["chosen"], "model": "a"}, {"text": row["rejected"], "model": "b"}]})
             for i, row in enumerate(keyword_pairs(n, seed=seed))]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def world(client, users, tiny_models):
    """An engineer, a project with 40 judged comparisons, and the tiny policy + reward registered."""
    admin = users.create("root", "admin")
    engineer = users.create("eve", "engineer")
    project = make_project(client, admin, name="Keyword", slug="kw")
    assert import_lines(client, admin, project["id"], keyword_native(40)).status_code == 200
    for kind in ("policy", "reward"):
        response = client.post("/api/v1/models", headers=engineer["headers"],
                               json={"name": f"tiny-{kind}", "path": str(tiny_models[kind]), "kind": kind,
                                     "project_id": project["id"]})  # fmt: skip
        assert response.status_code == 201, response.text
    return {"admin": admin, "engineer": engineer, "project": project}


def start(client, world, kind: str, **body) -> dict:
    body = {"kind": kind, "project_id": world["project"]["id"], "params": dict(FAST)} | body
    response = client.post("/api/v1/jobs", json=body, headers=world["engineer"]["headers"])
    assert response.status_code == 202, response.text
    return response.json()


def job(client, world, job_id: int) -> dict:
    return client.get(f"/api/v1/jobs/{job_id}", headers=world["engineer"]["headers"]).json()


def test_reward_job_end_to_end_registers_a_reward_version_with_lineage(client, world):
    queued = start(client, world, "reward")
    assert queued["status"] == "queued" and queued["base_model_id"] is not None
    assert run_one("w1") == queued["id"]
    done = job(client, world, queued["id"])
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert (
        result["dataset_id"] is not None
        and "loss/total" in json.dumps(result["metrics"])
        or result["metrics"]
    )
    models = client.get("/api/v1/models", headers=world["engineer"]["headers"]).json()
    version = next(m for m in models if m["id"] == result["model_version_id"])
    assert version["kind"] == "reward" and version["job_id"] == queued["id"]
    assert version["dataset_id"] == result["dataset_id"]
    assert version["base_version_id"] == queued["base_model_id"]
    dataset = client.get(
        f"/api/v1/datasets/{result['dataset_id']}", headers=world["engineer"]["headers"]
    ).json()
    assert version["dataset_sha256"] == dataset["sha256"] and dataset["format"] == "pairs"
    assert (Path(version["path"]) / "manifest.json").is_file() and (
        Path(version["path"]) / "config.json"
    ).is_file()
    metrics = client.get(f"/api/v1/jobs/{queued['id']}/metrics", headers=world["engineer"]["headers"]).json()
    assert metrics and all(isinstance(m["metrics"], dict) for m in metrics)
    assert done["dataset_id"] == result["dataset_id"]


def test_dpo_job_end_to_end_registers_a_policy_version(client, world):
    queued = start(client, world, "dpo")
    assert run_one("w1") == queued["id"]
    done = job(client, world, queued["id"])
    assert done["status"] == "succeeded", done
    version = client.get(
        f"/api/v1/models/{done['result']['model_version_id']}", headers=world["engineer"]["headers"]
    ).json()
    assert version["kind"] == "policy" and version["base_version_id"] == queued["base_model_id"]
    assert version["manifest"]["job_kind"] == "dpo" and version["manifest"]["params"]["max_steps"] == 3
    steps = client.get(f"/api/v1/jobs/{queued['id']}/metrics", headers=world["engineer"]["headers"]).json()
    names = {name for row in steps for name in row["metrics"]}
    assert any(name.startswith("rewards/") for name in names), names
    # where the job's time went, reported by the child as phases (trainer.timing), with its thread count
    final = done["result"]["metrics"]
    for phase in ("read_snapshot", "load_model", "tokenize", "prepare", "train", "save", "total"):
        assert final[f"time/{phase}_s"] >= 0, final
    assert final["time/train_s"] <= final["time/total_s"] and final["system/threads"] >= 1
    # the job page: finished (no self-polling), curves drawn as inline SVG, links to input and output
    page = client.get(f"/jobs/{queued['id']}", headers=world["engineer"]["headers"] | {"Accept": "text/html"})
    assert page.status_code == 200
    assert "<svg" in page.text and "<polyline" in page.text and 'hx-trigger="load delay:1s"' not in page.text
    assert 'id="job-time"' in page.text and "load model" in page.text and "tokenize" in page.text
    # the dataset link opens its page, not the API's JSON (issue 27)
    assert f'href="/datasets/{done["result"]["dataset_id"]}"' in page.text and version["name"] in page.text
    models_page = client.get("/models", headers=world["engineer"]["headers"] | {"Accept": "text/html"})
    assert models_page.status_code == 200 and version["name"] in models_page.text


def test_training_page_shows_defaults_and_starts_a_job(client, world):
    headers = world["engineer"]["headers"] | {"Accept": "text/html"}
    project_id = world["project"]["id"]
    page = client.get(f"/projects/{project_id}/train?kind=dpo", headers=headers)
    assert page.status_code == 200
    assert "Snapshot now" in page.text and "param_beta" in page.text and "default 0.1" in page.text
    assert "tiny-policy" in page.text
    form = {"kind": "dpo", "dataset_id": "", "base_model": "", "param_beta": "0.2", "param_max_steps": "2"}
    response = client.post(
        f"/projects/{project_id}/train", data=form, headers=headers, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    job_id = int(response.headers["location"].rsplit("/", 1)[1])
    queued = job(client, world, job_id)
    snapshot_spec = queued["params"].pop("snapshot")  # "snapshot now": taken by the job when it starts
    assert queued["status"] == "queued" and queued["params"] == {"beta": 0.2, "max_steps": 2}
    assert snapshot_spec["format"] == "pairs" and queued["dataset_id"] is None
    status = client.get(f"/jobs/{job_id}/status", headers=headers)
    assert 'hx-trigger="load delay:1s"' in status.text and "Cancel" in status.text
    listing = client.get("/jobs", headers=headers)
    assert f"/jobs/{job_id}" in listing.text and 'hx-trigger="every 2s"' in listing.text
    bad = client.post(f"/projects/{project_id}/train", data=form | {"param_beta": "lots"}, headers=headers)
    assert bad.status_code == 422 and "beta" in bad.text


def test_job_creation_validates_params_and_needs_a_policy(client, users):
    admin = users.create("root", "admin")
    project = make_project(client, admin, slug="empty")
    body = {"kind": "dpo", "project_id": project["id"]}
    response = client.post("/api/v1/jobs", json=body, headers=admin["headers"])
    assert response.status_code == 422 and "No policy model version" in response.json()["detail"]
    response = client.post("/api/v1/jobs", json=body | {"params": {"betta": 1}}, headers=admin["headers"])
    assert response.status_code == 422 and "betta" in response.json()["detail"]


def test_missing_base_model_fails_the_job_with_a_clear_message(client, world, tiny_models, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_models["policy"], tmp_path / "vanishing-policy")
    response = client.post("/api/v1/models", headers=world["engineer"]["headers"],
                           json={"name": "vanishing", "path": str(copy), "kind": "policy"})  # fmt: skip
    assert response.status_code == 201
    shutil.rmtree(copy)
    queued = start(client, world, "dpo", base_model="vanishing")
    run_one("w1")
    done = job(client, world, queued["id"])
    assert done["status"] == "failed"
    assert "base model" in done["error"] and str(copy) in done["error"], done["error"]


def test_a_failed_write_registers_no_version(client, world, monkeypatch):
    monkeypatch.setenv("RANKFORGE_TRAINER_FAIL_AT", "before_rename")
    before = len(client.get("/api/v1/models", headers=world["engineer"]["headers"]).json())
    queued = start(client, world, "reward")
    run_one("w1")
    done = job(client, world, queued["id"])
    assert done["status"] == "failed" and "before rename" in done["error"]
    assert len(client.get("/api/v1/models", headers=world["engineer"]["headers"]).json()) == before
    models_dir = Path(os.environ["RANKFORGE_DATA_DIR"]) / "models"
    assert not list(models_dir.glob("kw-reward-*")) if models_dir.exists() else True


def test_generate_job_adds_completions_and_arena_comparisons(client, world, db):
    from sqlalchemy import func, select

    from app.models import Comparison, Completion

    params = {"num_completions": 2, "max_new_tokens": 6, "arena": True, "max_prompts": 3}
    queued = start(client, world, "generate", params=params)
    run_one("w1")
    done = job(client, world, queued["id"])
    assert done["status"] == "succeeded", done
    new = list(db.scalars(select(Completion).where(Completion.id.in_(done["result"]["completion_ids"]))))
    assert len(new) == 6 and {c.model_name for c in new} == {"tiny-policy"}
    assert all(c.model_version_id == queued["base_model_id"] for c in new)
    comparisons = list(
        db.scalars(select(Comparison).where(Comparison.id.in_(done["result"]["comparison_ids"])))
    )
    # per prompt: one among its own two samples, and one against each other model (a, b) for the arena
    assert len(comparisons) == 3 * 3
    assert (
        db.scalar(
            select(func.count()).select_from(Comparison).where(Comparison.batch == f"job-{queued['id']}")
        )
        == 9
    )


def wait_for(predicate, timeout: float = 120.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def child_pid(job_id: int) -> int | None:
    path = Path(os.environ["RANKFORGE_DATA_DIR"]).resolve() / "jobs" / str(job_id) / "child.pid"
    return int(path.read_text()) if path.is_file() and path.read_text() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_of_a_running_ppo_job_ends_the_child(client, world, monkeypatch):
    from app.config import get_settings

    monkeypatch.setenv("RANKFORGE_WORKER_HEARTBEAT_SECONDS", "0.5")
    get_settings.cache_clear()
    params = {"max_steps": 100000, "per_device_train_batch_size": 8, "max_new_tokens": 8, "eval_prompts": 0,
              "logging_steps": 1}  # fmt: skip
    queued = start(client, world, "ppo", params=params)
    worker = threading.Thread(target=run_one, args=("w1",), daemon=True)
    worker.start()
    wait_for(
        lambda: client.get(
            f"/api/v1/jobs/{queued['id']}/metrics", headers=world["engineer"]["headers"]
        ).json()
    )
    pid = child_pid(queued["id"])
    assert pid and alive(pid)
    asked = time.monotonic()
    response = client.post(f"/api/v1/jobs/{queued['id']}/cancel", headers=world["engineer"]["headers"])
    assert response.status_code == 200
    worker.join(timeout=10)
    took = time.monotonic() - asked
    assert not worker.is_alive(), "the worker did not end the job within 10 s"
    assert job(client, world, queued["id"])["status"] == "cancelled"
    assert not alive(pid)
    print(f"cancel took {took:.1f} s")


def test_kill_9_of_a_worker_mid_training_then_another_worker_finishes(client, world, monkeypatch, db):
    from sqlalchemy import select

    from app.config import get_settings
    from app.models import ModelVersion

    queued = start(client, world, "dpo", params=FAST | {"max_steps": 40})
    victim = subprocess.Popen([sys.executable, "-c", "from app.worker import run_one; run_one('victim')"],
                              cwd=ROOT, env=os.environ | {"RANKFORGE_WORKER_HEARTBEAT_SECONDS": "0.5"})  # fmt: skip
    try:
        wait_for(lambda: client.get(f"/api/v1/jobs/{queued['id']}/metrics", headers=world["engineer"]["headers"]).json(),
                 every=0.05)  # fmt: skip
        pid = child_pid(queued["id"])
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert job(client, world, queued["id"])["status"] == "running"
    wait_for(lambda: not alive(pid), timeout=10)  # the trainer child dies with its worker
    monkeypatch.setenv("RANKFORGE_WORKER_STALE_SECONDS", "1")
    get_settings.cache_clear()
    time.sleep(1.5)
    assert run_one("rescuer") == queued["id"]
    done = job(client, world, queued["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    versions = list(db.scalars(select(ModelVersion).where(ModelVersion.job_id == queued["id"])))
    assert len(versions) == 1 and Path(versions[0].path, "manifest.json").is_file()


def test_scheduler_fires_once_with_two_workers(client, world, db):
    from sqlalchemy import select

    from app.models import Job, Project
    from app.training.scheduler import tick

    project = db.get(Project, world["project"]["id"])
    project.schedule = {"reward_every_pairs": 10, "reward_params": FAST}
    db.commit()
    results: dict[str, list[int]] = {}
    threads = [threading.Thread(target=lambda w=w: results.__setitem__(w, tick(w))) for w in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(ids) for ids in results.values()) == [0, 1], results
    assert tick("w1") == [] and tick("w2") == []  # one is queued already, and w2 does not hold the lease
    jobs = list(db.scalars(select(Job).where(Job.kind == "reward")))
    assert len(jobs) == 1 and jobs[0].message.startswith("queued by the schedule")
