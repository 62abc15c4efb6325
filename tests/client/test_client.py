"""The Python client (`rankforge/`) against a real server: uvicorn in a child process (`live_server`), a
worker running in this test process on the same database."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

import rankforge
from rankforge import Rankforge

try:  # the worker's composition root (was app.jobs.worker)
    from app.worker import run_one
except ImportError:  # pragma: no cover
    from app.jobs.worker import run_one

FAST = {"max_steps": 3, "logging_steps": 1, "per_device_train_batch_size": 4, "max_length": 64}


def keyword_records(n: int, offset: int = 0) -> list[dict]:
    """Native rows whose first completion says "please" (what the tiny reward model can learn)."""
    from trainer.tiny import keyword_pairs

    return [{"prompt": row["prompt"].strip(), "external_id": f"k{offset + i}",
             "completions": [{"text": row["chosen"], "model": "a"}, {"text": row["rejected"], "model": "b"}]}
            for i, row in enumerate(keyword_pairs(n, seed=offset + 1))]  # fmt: skip


@pytest.fixture
def clients(live_server, users):
    made = {role: users.create(name, role) for name, role in (("root", "admin"), ("eve", "engineer"),
                                                              ("rita", "annotator"))}  # fmt: skip
    opened = {role: Rankforge(live_server, made[role]["token"], backoff=0.01) for role in made}
    yield opened
    for client in opened.values():
        client.close()


class Worker(threading.Thread):
    """Runs queued jobs until stopped, as `rankforge worker` would."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            if run_one("client-test-worker") is None:
                time.sleep(0.2)


def rate_everything(rf: Rankforge, project) -> int:
    """The annotator prefers the option with "please" in it."""
    done = 0
    while (task := rf.tasks.next(project)) is not None:
        options = sorted(task["options"], key=lambda o: "please" not in o["text"])
        judgment = rf.tasks.submit(task["assignment_id"], [[options[0]["id"]], [options[1]["id"]]])
        assert judgment["comparison_id"] == task["comparison_id"]
        done += 1
    return done


@pytest.mark.training
def test_end_to_end_from_import_to_a_trained_reward_model(clients, tmp_path):
    admin, eng, rater = clients["admin"], clients["engineer"], clients["annotator"]
    project = admin.projects.create("Client e2e", slug="client-e2e", overlap=1, guidelines="Prefer politeness.")
    assert isinstance(project, rankforge.Project) and project.mode == "pairwise"
    assert admin.projects.import_records(project, keyword_records(10)).comparisons_created == 10
    path = tmp_path / "more.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in keyword_records(6, offset=100)))
    assert admin.import_data(project.slug, str(path)).comparisons_created == 6
    assert rate_everything(rater, project) == 16
    assert admin.projects.stats(project)["judgments"] == 16
    updated = admin.projects.update(project, overlap=2)
    assert updated.overlap == 2

    worker = Worker()
    worker.start()
    try:
        dataset = eng.datasets.create(project, format="pairs", split={"test_fraction": 0.2, "seed": 0})
        dataset = eng.datasets.wait(dataset, timeout=120, poll=0.2, progress=False)
        assert dataset.status == "ready" and dataset.sha256
        frame = eng.datasets.to_pandas(dataset, cache_dir=tmp_path / "cache")
        assert len(frame) == 16 and {"prompt", "chosen", "rejected", "split"} <= set(frame.columns)
        assert frame["chosen"].str.contains("please").all()
        folder = eng.datasets.download(dataset, tmp_path / "download")
        assert (folder / "train.jsonl").is_file() and (folder / "manifest.json").is_file()

        from trainer.tiny import (
            build_tiny_policy,
            build_tiny_reward,
            keyword_pairs,
            keyword_texts,
            train_tokenizer,
        )

        tokenizer = train_tokenizer(keyword_texts(keyword_pairs(64, seed=1)), vocab_size=384)
        policy = eng.models.add("client-policy", build_tiny_policy(tmp_path / "policy", tokenizer, seed=0),
                                kind="policy", project=project)  # fmt: skip
        eng.models.add("client-reward", build_tiny_reward(tmp_path / "reward", tokenizer, seed=0), kind="reward")
        job = eng.jobs.start("reward", project, dataset=dataset, base_model=policy.name, params=FAST)
        assert job.status == "queued"
        seen = []
        job = eng.jobs.wait(job, timeout=300, poll=0.5, progress=False, on_update=lambda j: seen.append(j.status))
        assert job.status == "succeeded", job.error
        assert eng.jobs.metrics(job)
        model = eng.models.get(job.result["model_version_id"])
        assert model.kind == "reward" and model.job_id == job.id and model.dataset_id == dataset.id
        assert any(m.id == model.id for m in eng.models.list(kind="reward"))
        assert any(j.id == job.id for j in eng.jobs.list(project))
    finally:
        worker.stopped.set()
        worker.join(30)


def test_import_a_dataframe_and_open_a_snapshot_as_dataframe(clients, tmp_path):
    pd = pytest.importorskip("pandas")
    admin, rater = clients["admin"], clients["annotator"]
    project = admin.projects.create("Frames")
    frame = pd.DataFrame(keyword_records(4))
    assert admin.import_data(project, frame).comparisons_created == 4
    rate_everything(rater, project)
    dataset = admin.datasets.create(project, format="pairs")
    assert run_one("w") == dataset.job_id
    dataset = admin.datasets.wait(dataset, timeout=10, progress=False)
    train = admin.datasets.open(dataset, split="train", cache_dir=tmp_path)
    assert "split" not in train.columns and len(train) == dataset.rows["train"]


def test_errors_carry_status_and_detail(clients, live_server):
    admin, rater = clients["admin"], clients["annotator"]
    with pytest.raises(rankforge.NotFoundError) as missing:
        admin.projects.get("no-such-project")
    assert missing.value.status_code == 404 and "no-such-project" in str(missing.value.detail)
    with pytest.raises(rankforge.PermissionDeniedError) as denied:
        rater.projects.create("Nope")
    assert denied.value.status_code == 403
    with pytest.raises(rankforge.ValidationError) as invalid:
        admin.projects.create("Bad", mode="sideways")
    assert invalid.value.status_code == 422 and isinstance(invalid.value.detail, list)
    admin.projects.create("Once", slug="once")
    with pytest.raises(rankforge.ConflictError):
        admin.projects.create("Twice", slug="once")
    assert admin.projects.set_members("once", ["rita"], members_only=True) == ["rita"]
    assert admin.projects.members("once") == ["rita"] and admin.projects.get("once").members_only
    with pytest.raises(rankforge.ValidationError) as unknown:
        admin.projects.set_members("once", ["ghost"])
    assert "ghost" in str(unknown.value.detail)
    with pytest.raises(rankforge.AuthenticationError), Rankforge(live_server, "wrong-token") as stranger:
        stranger.projects.list()
    with pytest.raises(rankforge.ConnectionFailed), Rankforge("http://127.0.0.1:9", "t", max_retries=1,
                                                               backoff=0.01) as nowhere:  # fmt: skip
        nowhere.projects.list()


def test_retries_idempotent_calls_only():
    calls = {"GET": 0, "POST": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls[request.method] += 1
        if request.method == "GET" and calls["GET"] <= 2:
            return httpx.Response(503 if calls["GET"] == 1 else 429, headers={"retry-after": "0"},
                                  json={"detail": "busy"})  # fmt: skip
        if request.method == "POST":
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"id": 1, "slug": "p", "name": "P", "mode": "pairwise", "overlap": 1})

    rf = Rankforge("http://rf.test", "t", backoff=0.001, transport=httpx.MockTransport(handler))
    assert rf.projects.get(1).slug == "p" and calls["GET"] == 3
    with pytest.raises(rankforge.ServerError) as error:
        rf.projects.create("P")
    assert calls["POST"] == 1 and error.value.status_code == 503 and error.value.detail == "busy"


def test_list_calls_page_through_everything(clients, tmp_path):
    admin = clients["admin"]
    for i in range(7):
        admin.projects.create(f"Paged {i}")
    projects = admin.projects.list(page_size=3)
    assert len(projects) == 7 and len({p.id for p in projects}) == 7
    project = projects[0]
    admin.projects.import_records(project, keyword_records(2))
    for _ in range(5):
        admin.datasets.create(project)  # queued exports: enough rows for paging
    datasets = admin.datasets.list(project, page_size=2)
    assert len(datasets) == 5 and len({d.id for d in datasets}) == 5
    assert len({j.id for j in admin.jobs.list(page_size=2)}) == 5
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    for i in range(5):
        admin.models.add(f"m{i}", tmp_path / "ckpt", kind="policy")
    assert [m.name for m in admin.models.list(page_size=2)] == [f"m{i}" for i in reversed(range(5))]


def test_cancel_and_failed_waits_raise(clients):
    admin = clients["admin"]
    project = admin.projects.create("Failing")
    empty = admin.datasets.create(project)  # nothing judged yet: the export fails for good
    queued = admin.datasets.create(project)
    cancelled = admin.jobs.cancel(queued.job_id)
    assert cancelled.status == "cancelled"
    with pytest.raises(rankforge.JobFailedError) as stopped:
        admin.jobs.wait(cancelled, timeout=5, progress=False)
    assert stopped.value.job.status == "cancelled"
    with pytest.raises(rankforge.ConflictError):
        admin.jobs.cancel(queued.job_id)
    assert admin.jobs.retry(queued.job_id).status == "queued"
    admin.jobs.cancel(queued.job_id)
    assert admin.rounds.list(project) == [] and isinstance(admin.rounds.recipe(project), dict)
    assert run_one("w") == empty.job_id
    with pytest.raises(rankforge.JobFailedError) as failed:
        admin.datasets.wait(empty, timeout=10, poll=0.1, progress=False)
    assert failed.value.job.status == "failed" and "nothing to export" in str(failed.value)
    with pytest.raises(rankforge.WaitTimeout):
        admin.jobs.wait(admin.jobs.start("export", project), timeout=0.3, poll=0.1, progress=False)
