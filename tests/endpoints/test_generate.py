"""Generate jobs against endpoints: 200 prompts against a real `transformers serve`, then the faults (429 with
Retry-After, 500s, stalls past the timeout, malformed JSON, a missing usage) from the fault server, and a restarted
job that asks only for what it is missing."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.worker import run_one
from tests.endpoints.conftest import SECRET
from tests.helpers import import_lines, make_project


@pytest.fixture
def staff(users):
    return {"admin": users.create("root", "admin"), "engineer": users.create("eve", "engineer"),
            "rater": users.create("ann", "annotator")}  # fmt: skip


def project_with_prompts(client, admin, prompts: list) -> int:
    """A project whose prompts (plain texts or message lists) have no completions yet."""
    project = make_project(client, admin)
    rows = [{"prompt": p, "external_id": f"e{i}", "reference": {"answer": i}} for i, p in enumerate(prompts)]
    response = import_lines(client, admin, project["id"], "\n".join(json.dumps(r) for r in rows).encode())
    assert response.status_code == 200, response.text
    return project["id"]


def add_endpoint(client, who, **body) -> dict:
    response = client.post("/api/v1/endpoints", json=body, headers=who["headers"])
    assert response.status_code == 201, response.text
    return response.json()


def generate(client, who, pid, model, **params) -> int:
    response = client.post("/api/v1/jobs", json={"kind": "generate", "project_id": pid, "base_model": model,
                                                 "params": params}, headers=who["headers"])  # fmt: skip
    assert response.status_code == 202, response.text
    return response.json()["id"]


def job_of(client, who, job_id) -> dict:
    return client.get(f"/api/v1/jobs/{job_id}", headers=who["headers"]).json()


def test_200_prompts_against_transformers_serve(client, staff, served, db, database_url):
    """200 prompts on SQLite; 20 on PostgreSQL (the database's part is the same, the server's time is not)."""
    from app.models import Completion

    n = 200 if database_url.startswith("sqlite") else 20
    chats = [[{"role": "user", "content": f"hello {i}"}, {"role": "assistant", "content": "hi"},
              {"role": "user", "content": f"and then {i}?"}] for i in range(10)]  # fmt: skip
    pid = project_with_prompts(client, staff["admin"], [f"What is {i} + {i}?" for i in range(n - 10)] + chats)
    add_endpoint(client, staff["engineer"], name="tiny-served", base_url=served.url, model=served.model,
                 max_concurrency=8, api_key=SECRET)  # fmt: skip
    job_id = generate(client, staff["engineer"], pid, "tiny-served", num_completions=2, max_new_tokens=2)
    assert run_one("w1") == job_id
    job = job_of(client, staff["engineer"], job_id)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert len(result["completion_ids"]) == 2 * n and len(result["comparison_ids"]) == n
    assert result["failed_prompts"] == []
    metrics = result["metrics"]
    assert metrics["generate/completions"] == 2 * n and metrics["generate/failed_prompts"] == 0
    assert metrics["generate/prompt_tokens"] > 0 and 0 < metrics["generate/completion_tokens"] <= 2 * n * 2
    db.rollback()
    completions = list(db.scalars(select(Completion).where(Completion.id.in_(result["completion_ids"]))))
    assert {c.model_name for c in completions} == {"tiny-served"}
    assert all(c.meta["usage"]["completion_tokens"] <= 2 and c.meta["finish_reason"] in ("eos", "length")
               for c in completions)  # fmt: skip
    assert all(c.params["max_tokens"] == 2 and c.params["endpoint"] == "tiny-served" for c in completions)
    # the new comparisons are rated like any other, except those whose two answers are one text (a tiny model
    # asked for 2 tokens often writes the same twice): recorded as identical, never served (app.judgments.identical)
    from app.judgments.identical import IDENTICAL, identical_answers
    from app.models import Comparison

    texts: dict[int, list[str]] = {}
    for completion in completions:
        texts.setdefault(completion.prompt_id, []).append(completion.text)
    comparisons = list(db.scalars(select(Comparison).where(Comparison.id.in_(result["comparison_ids"]))))
    same = {c.id for c in comparisons if identical_answers(texts[c.prompt_id])}
    assert {c.id for c in comparisons if (c.meta or {}).get(IDENTICAL)} == same
    assert all(c.required == 0 for c in comparisons if c.id in same)
    task = client.get(f"/api/v1/projects/{pid}/tasks/next", headers=staff["rater"]["headers"])
    if len(same) < len(comparisons):
        assert task.status_code == 200 and len(task.json()["options"]) == 2
        assert task.json()["comparison_id"] not in same
    else:
        assert task.status_code == 204


def test_faults_fail_only_their_prompts(client, staff, fault_server, fast_retries, db):
    from app.models import Completion

    fault_server.stall_seconds = 2.0
    markers = ["[429]", "[500]", "[500once]", "[stall]", "[badjson]", "[nousage]", "fine a", "fine b"]
    pid = project_with_prompts(client, staff["admin"], [f"faults {m}" for m in markers])
    add_endpoint(client, staff["engineer"], name="faulty", base_url=fault_server.url, model=fault_server.model,
                 timeout_seconds=0.5, max_concurrency=4, price_input=1000.0, price_output=2000.0)  # fmt: skip
    fault_server.reset()
    job_id = generate(client, staff["engineer"], pid, "faulty", num_completions=2)
    assert run_one("w1") == job_id
    job = job_of(client, staff["engineer"], job_id)
    assert job["status"] == "succeeded", job
    failed = {f["prompt_id"]: f["reason"] for f in job["result"]["failed_prompts"]}
    db.rollback()
    from app.models import Prompt

    ids = {p.messages[0]["content"].split(" ", 1)[1]: p.id for p in db.scalars(select(Prompt).where(Prompt.project_id == pid))}
    assert set(failed) == {ids["[500]"], ids["[stall]"], ids["[badjson]"]}
    assert "HTTP 500" in failed[ids["[500]"]] and "3 attempts" in failed[ids["[500]"]]
    assert "timeout" in failed[ids["[stall]"]] and "malformed" in failed[ids["[badjson]"]]
    assert len(fault_server.asked("[500]")) == 2 * 3  # each of the two completions: three attempts
    # Retry-After: 1 was honoured: the 429'd request was asked again a second or more later
    asked = sorted(r["at"] for r in fault_server.asked("[429]"))
    assert len(asked) == 3 and asked[-1] - asked[0] >= 1.0
    completions = list(db.scalars(select(Completion).where(Completion.id.in_(job["result"]["completion_ids"]))))
    by_prompt = {}
    for c in completions:
        by_prompt.setdefault(c.prompt_id, []).append(c)
    assert {p for p in by_prompt} == {ids[m] for m in ("[429]", "[500once]", "[nousage]", "fine a", "fine b")}
    assert all("usage" not in c.meta for c in by_prompt[ids["[nousage]"]])
    assert all(c.meta["usage"]["completion_tokens"] == 3 for c in by_prompt[ids["fine a"]])
    metrics = job["result"]["metrics"]
    assert metrics["generate/answers_without_usage"] == 2 and metrics["generate/failed_prompts"] == 3
    tokens_in, tokens_out = metrics["generate/prompt_tokens"], metrics["generate/completion_tokens"]
    assert metrics["generate/cost"] == pytest.approx((tokens_in * 1000 + tokens_out * 2000) / 1e6)
    assert SECRET not in json.dumps(job)


def test_multi_turn_prompts_go_as_messages(client, staff, fault_server):
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "turn one"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "turn two, multi"}]  # fmt: skip
    pid = project_with_prompts(client, staff["admin"], [chat, "plain, multi"])
    add_endpoint(client, staff["engineer"], name="faulty", base_url=fault_server.url, model=fault_server.model)
    fault_server.reset()
    job_id = generate(client, staff["engineer"], pid, "faulty", num_completions=1, temperature=0.3)
    assert run_one("w1") == job_id
    bodies = {r["content"]: r["body"] for r in fault_server.asked("multi")}
    assert bodies["turn two, multi"]["messages"] == chat
    assert bodies["plain, multi"]["messages"] == [{"role": "user", "content": "plain, multi"}]
    assert bodies["plain, multi"]["temperature"] == 0.3 and bodies["plain, multi"]["model"] == fault_server.model


def test_every_prompt_failing_fails_the_job(client, staff, fault_server, fast_retries):
    pid = project_with_prompts(client, staff["admin"], ["all down [500] a", "all down [500] b"])
    add_endpoint(client, staff["engineer"], name="faulty", base_url=fault_server.url, model=fault_server.model)
    job_id = generate(client, staff["engineer"], pid, "faulty", num_completions=1)
    assert run_one("w1") == job_id
    job = job_of(client, staff["engineer"], job_id)
    assert job["status"] == "failed" and "HTTP 500" in job["error"]


def test_a_restarted_job_asks_only_for_what_is_missing(client, staff, fault_server, db):
    from app.jobs.runner import JobContext
    from app.training.endpoint_generate import run_generate_job

    class DiesAfter(JobContext):
        """A worker that dies on its third progress report (answers are then in flight and on disk)."""

        reports = 0

        def progress(self, fraction, message=None):
            self.reports += 1
            if self.reports >= 3:
                raise RuntimeError("the worker died")

    prompts = [f"restart {i}" for i in range(20)]
    pid = project_with_prompts(client, staff["admin"], prompts)
    add_endpoint(client, staff["engineer"], name="faulty", base_url=fault_server.url, model=fault_server.model,
                 max_concurrency=2)  # fmt: skip
    job_id = generate(client, staff["engineer"], pid, "faulty", num_completions=2)
    fault_server.reset()
    with pytest.raises(RuntimeError, match="the worker died"):
        run_generate_job(DiesAfter(job_id, "generate", "w0"))
    first = len(fault_server.asked("restart"))
    assert 0 < first < 40
    assert run_one("w1") == job_id  # the job was never claimed by w0: w1 runs it as a restart would
    job = job_of(client, staff["engineer"], job_id)
    assert job["status"] == "succeeded", job
    assert len(job["result"]["completion_ids"]) == 40
    assert sorted(fault_server.seen[p] for p in prompts) == [2] * 20  # every prompt asked exactly twice in all
    assert len(fault_server.asked("restart")) == 40
