"""The Ray launcher (app.jobs.ray_launch) against a real local Ray head: `ray start --head` in a temporary
directory with 2 CPUs and its dashboard (the job submission API) on a free port, one for the whole session,
stopped at the end. Tiny trainer jobs run as Ray jobs; their events come back to the job page; cancel stops the
Ray job; a Ray job stopped from outside fails its Rankforge job with the reason; an unreachable cluster is a
clear error. Without Ray installed (or a head that does not start) these tests skip with the reason; under
CI=true that is a failure, as for PostgreSQL and Chromium."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from app.worker import run_one
from tests.conftest import free_port, missing
from tests.jobs.test_training_jobs import FAST, job, start, tiny_models, wait_for, world  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
LONG = {"max_steps": 100000, "logging_steps": 1, "per_device_train_batch_size": 4, "max_length": 64}


@pytest.fixture(scope="session")
def ray_head():
    """A local Ray head for the session: its dashboard's address (what RANKFORGE_RAY_ADDRESS names)."""
    try:
        import ray.job_submission  # noqa: F401
    except ImportError as error:
        missing(f"Ray is not installed (pip install 'rankforge[ray]'): {error}")
    ray = Path(sys.executable).parent / "ray"
    if not ray.is_file():
        missing(f"the ray command is not next to {sys.executable}")
    temp = tempfile.mkdtemp(prefix="rfray-", dir="/tmp")  # short: Ray's unix sockets live under it (108 bytes)
    dashboard = free_port()
    ports = {"--port": free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port(),
             "--node-manager-port": free_port(), "--object-manager-port": free_port()}  # fmt: skip
    command = [str(ray), "start", "--head", "--block", "--temp-dir", temp, "--num-cpus", "2",
               "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
               "--disable-usage-stats", "--object-store-memory", str(80 * 1024 * 1024),
               *[str(part) for pair in ports.items() for part in pair]]  # fmt: skip
    log_path = Path(temp) / "head.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed when the head stops
    # the node's own local directory (its cache and scratch): not the worker's, as on another machine
    node_data = Path(temp) / "node-data"
    head = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=os.environ | {"RAY_USAGE_STATS_ENABLED": "0",
                                              "RANKFORGE_DATA_DIR": str(node_data)})  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    # A start limit, not a timing assertion: the head, its dashboard and agents on a loaded 2-core machine.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and head.poll() is None:
        try:
            if httpx.get(address + "/api/version", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        _stop_head(head)
        log.close()
        reason = log_path.read_text()[-1500:]
        shutil.rmtree(temp, ignore_errors=True)
        missing(f"the local Ray head did not start: {reason}")
    try:
        yield {"address": address, "node_data": node_data}
    finally:
        _stop_head(head)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _stop_head(head: subprocess.Popen) -> None:
    """SIGINT is what `ray start --block` ends its processes on (SIGTERM it ignores); SIGKILL the group after. Its
    shutdown took the whole minute it was given at the end of CI (a worker's last teardown, 61 s): 10 s, then the
    group (the head was started in a session of its own: every Ray process is in it)."""
    if head.poll() is None:
        head.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait()


@pytest.fixture
def on_ray(ray_head, monkeypatch):
    from app.config import get_settings

    monkeypatch.setenv("RANKFORGE_RAY_ADDRESS", ray_head["address"])
    monkeypatch.setenv("RANKFORGE_WORKER_HEARTBEAT_SECONDS", "0.5")
    get_settings.cache_clear()
    yield ray_head["address"]
    get_settings.cache_clear()


def ray_submission(job_id: int) -> str | None:
    """The Ray job's submission id: from the ray_job.txt the launcher writes in the job's directory before it logs the
    id (a running job's log line can scroll out of the stored tail: LOG_TAIL_CHARS), else from the job's log (the
    directory may have gone to an object store)."""
    from app.db import session_scope
    from app.jobs.trainer_child import job_dir
    from app.models import Job

    marker = job_dir(job_id) / "ray_job.txt"
    if marker.is_file():
        written = re.fullmatch(r"(rankforge-job-[0-9]+-[0-9a-f]+)\n.*", marker.read_text(), re.DOTALL)
        if written:
            return written.group(1)
    with session_scope() as db:
        found = re.search(r"as Ray job (rankforge-job-[0-9]+-[0-9a-f]+)", db.get(Job, job_id).log_tail or "")
    return found.group(1) if found else None


def page(client, world, job_id: int) -> str:  # noqa: F811 - fixture
    response = client.get(f"/jobs/{job_id}", headers=world["engineer"]["headers"] | {"Accept": "text/html"})
    assert response.status_code == 200
    return response.text


def test_reward_job_runs_on_ray_with_its_curves_on_the_job_page(client, world, on_ray):  # noqa: F811 - fixture
    from ray.job_submission import JobStatus, JobSubmissionClient

    queued = start(client, world, "reward", params=FAST | {"launcher": "ray", "entrypoint_num_cpus": 1})
    assert run_one("w1") == queued["id"]
    done = job(client, world, queued["id"])
    assert done["status"] == "succeeded", done
    submission = ray_submission(queued["id"])
    ray_job = JobSubmissionClient(on_ray).get_job_info(submission)
    assert ray_job.status == JobStatus.SUCCEEDED and ray_job.metadata["rankforge_job_id"] == str(queued["id"])
    assert "-m trainer.run" in ray_job.entrypoint and "accelerate" not in ray_job.entrypoint
    # the reserved CPU sizes the trainer's threads (a node's CPUs are not the job's), unless the setting says
    threads = ray_job.runtime_env["env_vars"]["RANKFORGE_TRAINER_THREADS"]
    assert threads == os.environ.get("RANKFORGE_TRAINER_THREADS", "1")
    steps = client.get(f"/api/v1/jobs/{queued['id']}/metrics", headers=world["engineer"]["headers"]).json()
    assert {row["step"] for row in steps} >= {1, 2, 3}, steps
    version = client.get(f"/api/v1/models/{done['result']['model_version_id']}",
                         headers=world["engineer"]["headers"]).json()  # fmt: skip
    assert version["kind"] == "reward" and version["job_id"] == queued["id"]
    text = page(client, world, queued["id"])
    assert "<polyline" in text and submission in text  # the curves, and the log line naming the Ray job


@pytest.mark.only_db("sqlite")  # the launcher is the same for both databases: the reward test runs on both
def test_generate_job_runs_on_ray(client, world, on_ray, db):  # noqa: F811 - fixture
    from sqlalchemy import select

    from app.models import Completion

    params = {"num_completions": 2, "max_new_tokens": 6, "max_prompts": 2, "launcher": "ray"}
    queued = start(client, world, "generate", params=params)
    assert run_one("w1") == queued["id"]
    done = job(client, world, queued["id"])
    assert done["status"] == "succeeded", done
    new = list(db.scalars(select(Completion).where(Completion.id.in_(done["result"]["completion_ids"]))))
    assert len(new) == 4 and {c.model_name for c in new} == {"tiny-policy"}
    text = page(client, world, queued["id"])
    assert ray_submission(queued["id"]) in text


@pytest.mark.only_db("sqlite")
def test_reward_job_on_ray_through_an_s3_store(client, world, on_ray, ray_head, s3_store, monkeypatch, db):  # noqa: F811 - fixture
    """With an object store the Ray job reads nothing of the worker's: its inputs go to the store as a bundle,
    its node takes a cached copy, and the output comes back through the store before the version is published."""
    from ray.job_submission import JobSubmissionClient

    from app.models import Job

    monkeypatch.setenv("RANKFORGE_RAY_ENV", ",".join(s3_store["env"]))  # the node reaches the same S3 server
    queued = start(client, world, "reward", params=FAST | {"launcher": "ray"})
    assert run_one("w1") == queued["id"]
    done = job(client, world, queued["id"])
    db.expire_all()
    assert done["status"] == "succeeded", db.get(Job, queued["id"]).log_tail[-3000:]
    ray_job = JobSubmissionClient(on_ray).get_job_info(ray_submission(queued["id"]))
    bundle = f"{s3_store['url']}/jobs/{queued['id']}/ray-in-"
    assert "app.jobs.ray_entry" in ray_job.entrypoint and bundle in ray_job.entrypoint
    assert list((ray_head["node_data"] / "cache" / "artifacts").iterdir())  # the node's cached copy of the bundle
    version = client.get(f"/api/v1/models/{done['result']['model_version_id']}",
                         headers=world["engineer"]["headers"]).json()  # fmt: skip
    assert version["path"].startswith(s3_store["url"] + "/models/"), version
    steps = client.get(f"/api/v1/jobs/{queued['id']}/metrics", headers=world["engineer"]["headers"]).json()
    assert steps and "<polyline" in page(client, world, queued["id"])


@pytest.mark.only_db("sqlite")
def test_a_failing_trainer_on_ray_fails_the_job_with_its_reason(client, world, on_ray, monkeypatch):  # noqa: F811 - fixture
    from ray.job_submission import JobStatus, JobSubmissionClient

    monkeypatch.setenv("RANKFORGE_TRAINER_FAIL_AT", "before_rename")  # the trainer's own fault hook (trainer.run)
    queued = start(client, world, "reward", params=FAST | {"launcher": "ray"})
    assert run_one("w1") == queued["id"]
    failed = job(client, world, queued["id"])
    assert failed["status"] == "failed" and "forced failure before rename" in failed["error"], failed["error"]
    assert failed["result"] is None or not failed["result"].get("model_version_id")
    assert JobSubmissionClient(on_ray).get_job_status(ray_submission(queued["id"])) == JobStatus.FAILED


@pytest.fixture
def worker_thread(db_url):
    """Starts `run_one` in a thread under a worker id of this test alone; at teardown, a thread still running (the
    test failed before it ended) has its job cancelled and is joined, so it never acts on a later test's job (the
    tables are emptied between tests, so job ids start again at 1; a worker id is never reused, and the job
    service only lets a job's own worker finish or fail it). A thread that does not end fails the teardown."""
    from sqlalchemy import select

    from app.db import session_scope
    from app.jobs import service
    from app.models import Job

    started: list[tuple[threading.Thread, str]] = []

    def start_worker() -> threading.Thread:
        worker_id = f"w-{uuid.uuid4().hex[:12]}"
        thread = threading.Thread(target=run_one, args=(worker_id,), daemon=True, name=worker_id)
        thread.start()
        started.append((thread, worker_id))
        return thread

    yield start_worker
    for thread, worker_id in started:
        if thread.is_alive():
            with session_scope(write=True) as db:
                mine = (Job.worker_id == worker_id) & (Job.status == "running")
                for unfinished in db.scalars(select(Job).where(mine | (Job.status == "queued"))):
                    service.request_cancel(db, unfinished)  # a queued one too: the thread may not have claimed yet
            thread.join(timeout=180)  # a limit, not a timing assertion: the cancel stops the Ray job first
        if thread.is_alive():
            pytest.fail(f"worker thread {worker_id} did not end at teardown")


def _run_until_training(client, world, worker_thread) -> tuple[dict, threading.Thread, str]:  # noqa: F811 - fixture
    queued = start(client, world, "reward", params=LONG | {"launcher": "ray"})
    worker = worker_thread()
    # Training has begun (curves) and the log line naming the Ray job has been stored (the log tail is saved with the
    # heartbeat, so it may come after the first curves).
    wait_for(lambda: client.get(f"/api/v1/jobs/{queued['id']}/metrics", headers=world["engineer"]["headers"]).json()
             and ray_submission(queued["id"]), timeout=300)  # fmt: skip
    return queued, worker, ray_submission(queued["id"])


@pytest.mark.only_db("sqlite")
def test_cancel_stops_the_ray_job(client, world, on_ray, worker_thread):  # noqa: F811 - fixture
    from ray.job_submission import JobStatus, JobSubmissionClient

    queued, worker, submission = _run_until_training(client, world, worker_thread)
    response = client.post(f"/api/v1/jobs/{queued['id']}/cancel", headers=world["engineer"]["headers"])
    assert response.status_code == 200
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert job(client, world, queued["id"])["status"] == "cancelled"
    assert JobSubmissionClient(on_ray).get_job_status(submission) == JobStatus.STOPPED


@pytest.mark.only_db("sqlite")
def test_a_ray_job_stopped_from_outside_fails_its_job_with_the_reason(client, world, on_ray, worker_thread):  # noqa: F811 - fixture
    from ray.job_submission import JobSubmissionClient

    queued, worker, submission = _run_until_training(client, world, worker_thread)
    assert JobSubmissionClient(on_ray).stop_job(submission)  # as `ray job stop` would
    worker.join(timeout=60)
    assert not worker.is_alive()
    failed = job(client, world, queued["id"])
    assert failed["status"] == "failed", failed
    assert f"Ray job {submission} was stopped outside Rankforge" in failed["error"], failed["error"]


def test_an_unreachable_cluster_is_a_clear_error_at_job_start(client, world, monkeypatch):  # noqa: F811 - fixture
    pytest.importorskip("ray.job_submission", reason="Ray is not installed (pip install 'rankforge[ray]')")
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("RANKFORGE_RAY_ADDRESS", address)
    queued = start(client, world, "reward", params=FAST | {"launcher": "ray"})
    assert run_one("w1") == queued["id"]
    failed = job(client, world, queued["id"])
    assert failed["status"] == "failed" and failed["error"].startswith(f"The Ray cluster at {address} is unreachable")


@pytest.mark.only_db("sqlite")
def test_ray_params_are_checked_and_the_address_is_required(client, world, monkeypatch):  # noqa: F811 - fixture
    for params, needle in (({"launcher": "ray", "entrypoint_num_gpus": -1}, "entrypoint_num_gpus"),
                           ({"launcher": "ray", "entrypoint_memory": 1.5}, "whole number of bytes"),
                           ({"entrypoint_num_cpus": 2}, "for launcher ray"),
                           ({"launcher": "slurm"}, "python, accelerate, ray")):  # fmt: skip
        body = {"kind": "reward", "project_id": world["project"]["id"], "params": FAST | params}
        response = client.post("/api/v1/jobs", json=body, headers=world["engineer"]["headers"])
        assert response.status_code == 422 and needle in response.text, response.text
    for name in ("RANKFORGE_RAY_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    queued = start(client, world, "reward", params=FAST | {"launcher": "ray"})
    assert run_one("w1") == queued["id"]
    failed = job(client, world, queued["id"])
    assert failed["status"] == "failed" and "RANKFORGE_RAY_ADDRESS" in failed["error"]


@pytest.mark.only_db("sqlite")
def test_a_retry_stops_the_ray_job_an_earlier_attempt_left_running(on_ray):
    """A worker killed mid-job cannot stop its Ray job; the job's next attempt does, found by its metadata."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from app.jobs.ray_launch import INSTANCE_KEY, job_metadata, stop_earlier_attempts

    client = JobSubmissionClient(on_ray)
    orphan = client.submit_job(entrypoint="sleep 300", metadata=job_metadata(424242))
    # the same job id of another Rankforge (another database) on the same cluster
    other = client.submit_job(entrypoint="sleep 300", metadata=job_metadata(424242) | {INSTANCE_KEY: "another"})
    try:
        wait_for(lambda: client.get_job_status(orphan) == JobStatus.RUNNING, timeout=120, every=0.5)
        assert stop_earlier_attempts(client, 424242) == [orphan]
        wait_for(lambda: client.get_job_status(orphan).is_terminal(), timeout=120, every=0.5)
        assert client.get_job_status(orphan) == JobStatus.STOPPED
        assert not client.get_job_status(other).is_terminal()  # another deployment's Ray job is left alone
    finally:
        client.stop_job(other)


def test_unchanged_inputs_of_a_ray_job_are_uploaded_once(s3_store, tmp_path, monkeypatch):  # noqa: F811 - fixture
    """With an object store each input of a Ray job is content-addressed (inputs/<sha256>; a cached copy of a store
    artifact is named by its own location): a second job with the same base model, dataset and prompts uploads only
    its spec; a changed input is uploaded again; the node side
    (app.jobs.ray_entry) turns the bundle's locations back into local files. The upload step alone, against the
    moto server (no Ray head needed: the Ray job's entrypoint is covered by the S3 test above)."""
    import json
    from types import SimpleNamespace

    import s3fs

    from app.config import get_settings
    from app.jobs.ray_entry import BUNDLE_KEY, _inputs
    from app.jobs.trainer_child import stage_for_ray
    from app.store import get_store, open_location

    monkeypatch.setenv("RANKFORGE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    store = get_store()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "weights.bin").write_bytes(os.urandom(50_000))
    base_location = store.location("models", "base")
    store.publish(model, base_location)
    base = open_location(base_location).local_copy()  # a worker reads a base model from its cache, as a job does
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "train.jsonl").write_text('{"prompt": "x"}\n')
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "p"}\n')
    paths = {"base_model": str(base), "dataset_path": str(dataset), "prompts_path": str(prompts), "reward_model": None}
    spec = SimpleNamespace(to_dict=lambda: dict(paths, output_dir=str(tmp_path / "out")))
    s3fs.S3FileSystem.clear_instance_cache()
    raw = s3fs.S3FileSystem()
    root = s3_store["url"].removeprefix("s3://")

    def stage(job_id: int) -> tuple[str, list[str], set[str]]:
        before, lines = set(raw.find(root)), []
        raw.invalidate_cache()
        location, _ = stage_for_ray(spec, tmp_path / "work", job_id, lines.append)
        raw.invalidate_cache()
        return location, lines, set(raw.find(root)) - before

    first, lines, added = stage(1)
    # the base model is a model version's cached copy: its own location, nothing uploaded; the other two go up once
    assert lines[0] == f"Ray job input base_model: already in the store at {base_location}\n", lines
    assert len(lines) == 3 and all("uploaded to" in line for line in lines[1:]), lines
    assert {key.split("/")[2] for key in added} == {"inputs", "jobs"}
    assert len({key.split("/")[3] for key in added if key.split("/")[2] == "inputs"}) == 2
    second, lines, added = stage(2)
    assert len(lines) == 3 and all("already in the store" in line for line in lines), lines
    bundle = f"{root}/jobs/2/{second.rsplit('/', 1)[1]}"
    assert added == {f"{bundle}/spec.json", f"{bundle}/_store_manifest.json"}  # only the spec: no input again

    prompts.write_text('{"prompt": "changed"}\n')
    _, lines, added = stage(3)
    assert [line.split(":")[0] for line in lines if "uploaded to" in line] == ["Ray job input prompts_path"]
    assert len({key.split("/")[3] for key in added if key.split("/")[2] == "inputs"}) == 1

    # on the node: another local directory; the spec's inputs become its cached copies of those locations
    monkeypatch.setenv("RANKFORGE_DATA_DIR", str(tmp_path / "node"))
    get_settings.cache_clear()
    local = open_location(second).local_copy()
    resolved = _inputs(local, json.loads((local / "spec.json").read_text())[BUNDLE_KEY])
    assert set(resolved) == {"base_model", "dataset_path", "prompts_path"}
    assert (Path(resolved["base_model"]) / "weights.bin").read_bytes() == (base / "weights.bin").read_bytes()
    assert Path(resolved["prompts_path"]).read_text() == '{"prompt": "p"}\n'
    assert str(tmp_path / "node") in resolved["dataset_path"]
    get_settings.cache_clear()
