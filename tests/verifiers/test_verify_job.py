"""Verifiable projects end to end: import prompts with references and tests, verify answers in a `verify` job
(the sandbox in a child of the worker), pass rates per version in the API and on the page, the human audit."""

from __future__ import annotations

import json

import pytest

from app.worker import run_one
from tests.conftest import SHARED_DATA, missing
from tests.helpers import import_lines, make_project

CODE_TESTS = {"code": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-1) == -2\n",
              "entry_point": "double", "prefix": "def double(x):\n    \"\"\"Twice x.\"\"\"\n"}  # fmt: skip


def lines(rows) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def verifiable_rows():
    rows = []
    for i in range(4):  # arithmetic: one right and one wrong answer each
        rows.append({"prompt": f"What is {i} + {i}?", "external_id": f"math-{i}", "reference": {"answer": 2 * i},
                     "completions": [{"text": f"The answer is {2 * i}", "model": "m1"},
                                     {"text": f"The answer is {2 * i + 1}", "model": "m1"}]})  # fmt: skip
    rows.append({"prompt": "Write double(x).", "external_id": "code-0", "tests": CODE_TESTS,
                 "completions": [{"text": "    return 2 * x\n", "model": "m1"},
                                 {"text": "```python\ndef double(x):\n    while True: pass\n```", "model": "m1"}]})  # fmt: skip
    rows.append({"prompt": "Only a question", "external_id": "bare", "reference": {"answer": "yes", "rule": "exact"}})
    return rows


@pytest.fixture
def world(client, users):
    admin = users.create("root", "admin")
    engineer = users.create("eve", "engineer")
    rater = users.create("ann", "annotator")
    project = make_project(client, admin, name="Math", slug="math")
    response = import_lines(client, admin, project["id"], lines(verifiable_rows()))
    assert response.status_code == 200, response.text
    assert response.json()["prompts_created"] == 6 and response.json()["comparisons_created"] == 5
    return {"admin": admin, "engineer": engineer, "rater": rater, "project": project}


def test_verify_job_gives_verdicts_pass_rates_and_an_audit(client, world, monkeypatch):
    monkeypatch.setenv("RANKFORGE_SANDBOX_HIDE", "")
    eng = world["engineer"]["headers"]
    pid = world["project"]["id"]
    response = client.post("/api/v1/jobs", json={"kind": "verify", "project_id": pid,
                                                 "params": {"samples": 2, "workers": 2}}, headers=eng)  # fmt: skip
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert run_one("w1") == job_id
    job = client.get(f"/api/v1/jobs/{job_id}", headers=eng).json()
    assert job["status"] == "succeeded", job
    rates = job["result"]["pass_rates"]
    assert rates["answers"] == 10 and rates["prompts"] == 5
    assert rates["pass_at_1"] == pytest.approx(0.5)
    assert rates["pass_at_k"] == pytest.approx(1.0) and rates["k"] == 2
    assert rates["reasons"] == {"passed": 5, "timeout": 1, "wrong_answer": 4}

    assert client.get(f"/jobs/{job_id}", headers=eng).status_code == 200
    verifier = client.get(f"/api/v1/projects/{pid}/verifier", headers=eng).json()
    assert verifier["verifiable"] and verifier["prompts"] == 6 and verifier["with_tests"] == 1
    assert [v["job_id"] for v in verifier["versions"]] == [job_id]
    low, high = verifier["versions"][0]["pass_at_1_ci"]
    assert low <= 0.5 <= high

    verdicts = client.get(f"/api/v1/projects/{pid}/verdicts", params={"job_id": job_id}, headers=eng).json()["verdicts"]
    timeout = next(v for v in verdicts if v["reason"] == "timeout")
    assert timeout["tests"]["entry_point"] == "double" and "while True" in timeout["answer"]

    # a second verify job without a model finds nothing new to verify
    second = client.post("/api/v1/jobs", json={"kind": "verify", "project_id": pid}, headers=eng).json()
    assert run_one("w1") == second["id"]
    assert client.get(f"/api/v1/jobs/{second['id']}", headers=eng).json()["status"] == "failed"

    # humans audit a weighted sample; an annotator may judge verdicts
    sampled = client.post(f"/api/v1/projects/{pid}/verdicts/audit-sample", json={"count": 4}, headers=eng).json()
    assert sampled == {"sampled": 4}
    queue = client.get(f"/api/v1/projects/{pid}/verdicts/audit", headers=world["rater"]["headers"]).json()["verdicts"]
    assert len(queue) == 4 and all("answer" in v and "prompt" in v for v in queue)
    passes = [v for v in queue if v["passed"]]
    fails = [v for v in queue if not v["passed"]]
    for i, verdict in enumerate(queue):
        wrong = verdict in passes[:1]  # the auditor disputes one pass
        response = client.post(f"/api/v1/verdicts/{verdict['id']}/audit", json={"correct": not wrong, "note": str(i)},
                               headers=world["rater"]["headers"])  # fmt: skip
        assert response.status_code == 200, response.text
    audit = client.get(f"/api/v1/projects/{pid}/verifier", headers=eng).json()["audit"]
    if passes:
        assert audit["false_positive"]["audited"] == len(passes) and audit["false_positive"]["wrong"] == 1
        assert audit["false_positive"]["rate"] == pytest.approx(1 / len(passes))
        assert 0 <= audit["false_positive"]["ci"][0] < audit["false_positive"]["ci"][1] <= 1
    assert audit["false_negative"]["audited"] == len(fails) and audit["false_negative"]["wrong"] == 0
    assert audit["pending"] == 0

    # the disputed prompt can be excluded (and verify jobs skip it)
    disputed = client.get(f"/api/v1/projects/{pid}/verifier", headers=eng).json()["disputed"]
    if passes:
        prompt_id = disputed[0]["prompt_id"]
        response = client.post(f"/api/v1/projects/{pid}/prompts/{prompt_id}/verifier", json={"excluded": True},
                               headers=eng)  # fmt: skip
        assert response.json()["excluded"] is True
        assert client.get(f"/api/v1/projects/{pid}/verifier", headers=eng).json()["excluded"] == 1

    page = client.get(f"/projects/{pid}/verifier", headers=eng)
    assert page.status_code == 200 and "pass@1 per model version" in page.text and "False positives" in page.text


def test_verify_job_params_and_projects_are_checked(client, world, users):
    eng = world["engineer"]["headers"]
    pid = world["project"]["id"]
    bad = client.post("/api/v1/jobs", json={"kind": "verify", "project_id": pid, "params": {"sampels": 2}}, headers=eng)
    assert bad.status_code == 422 and "sampels" in bad.text
    other = make_project(client, world["admin"], name="Plain", slug="plain")
    response = client.post("/api/v1/jobs", json={"kind": "verify", "project_id": other["id"]}, headers=eng)
    assert response.status_code == 422 and "no verifiable prompts" in response.text


def test_import_errors_are_line_numbered(client, world):
    pid = world["project"]["id"]
    admin = world["admin"]
    data = lines([{"question": "q", "answer": "no marker"}, {"question": "q2", "answer": "#### 12"}])
    response = import_lines(client, admin, pid, data, fmt="gsm8k")
    assert response.status_code == 422
    assert response.json()["detail"]["errors"] == [{"line": 1, "message": "answer must end with '#### N', the final answer"}]
    data = lines([{"prompt": "def f():\n", "test": "assert (", "entry_point": "f"}])
    response = import_lines(client, admin, pid, data, fmt="humaneval")
    assert response.status_code == 422 and "does not compile" in response.text


@pytest.mark.parametrize("name, fmt, count", [("gsm8k_test_500.jsonl", "gsm8k", 500),
                                              ("humaneval_first_82.jsonl", "humaneval", 82)])  # fmt: skip
def test_real_math_and_code_sets_import(client, world, name, fmt, count):
    path = SHARED_DATA / name
    if not path.is_file():
        missing(f"reference data {name} not found in {SHARED_DATA}")
    response = import_lines(client, world["admin"], world["project"]["id"], path.read_bytes(), fmt=fmt)
    assert response.status_code == 200, response.text
    assert response.json()["prompts_created"] == count
    verifier = client.get(f"/api/v1/projects/{world['project']['id']}/verifier", headers=world["engineer"]["headers"])
    assert verifier.json()["prompts"] == 6 + count


def test_verify_job_samples_a_policy_version_and_records_its_pass_rates(client, world, tmp_path_factory):
    """With a base_model, the verify job samples answers from that version (a generate child) and verifies them."""
    from trainer.tiny import build_tiny_policy, train_tokenizer

    root = tmp_path_factory.mktemp("tiny-sums")
    tokenizer = train_tokenizer([f"What is {i} + {i}? The answer is {2 * i}" for i in range(10)], vocab_size=128)
    policy = build_tiny_policy(root / "policy", tokenizer, seed=0)
    eng = world["engineer"]["headers"]
    pid = world["project"]["id"]
    response = client.post("/api/v1/models", headers=eng, json={"name": "tiny-sums", "path": str(policy),
                                                               "kind": "policy", "project_id": pid})  # fmt: skip
    assert response.status_code == 201, response.text
    version_id = response.json()["id"]
    params = {"samples": 2, "max_new_tokens": 4, "temperature": 1.0}
    response = client.post("/api/v1/jobs", json={"kind": "verify", "project_id": pid, "base_model": version_id,
                                                 "params": params}, headers=eng)  # fmt: skip
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert run_one("w1") == job_id
    job = client.get(f"/api/v1/jobs/{job_id}", headers=eng).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["model_version_id"] == version_id
    assert job["result"]["pass_rates"]["answers"] == 6 * 2 and job["result"]["pass_rates"]["prompts"] == 6
    versions = client.get(f"/api/v1/projects/{pid}/verifier", headers=eng).json()["versions"]
    assert versions[-1]["model_name"] == "tiny-sums" and versions[-1]["model_version_id"] == version_id
    verdicts = client.get(f"/api/v1/projects/{pid}/verdicts", params={"job_id": job_id}, headers=eng).json()
    assert {v["model_name"] for v in verdicts["verdicts"]} == {"tiny-sums"}

    # a round chains it after the job that registers its new policy: base_model_from (and a dependency on it)
    chained = client.post("/api/v1/jobs", json={"kind": "verify", "project_id": pid,
                                                "params": params | {"base_model_from": job_id, "round_id": 7}},
                          headers=eng).json()  # fmt: skip
    assert chained["depends_on"] == [job_id]
    assert run_one("w1") == chained["id"]
    done = client.get(f"/api/v1/jobs/{chained['id']}", headers=eng).json()
    assert done["status"] == "succeeded" and done["result"]["model_version_id"] == version_id, done
    versions = client.get(f"/api/v1/projects/{pid}/verifier", headers=eng).json()["versions"]
    assert versions[-1]["round_id"] == 7
