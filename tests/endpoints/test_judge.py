"""Generative judges on endpoints: every pair asked in both orders with the project's template, verdicts parsed
strictly (JSON or a label), log-probabilities as confidence, abstentions recorded, answers cached, and the judge
figures (accuracy against the human majority, kappa, position bias) computed as for any judge."""

from __future__ import annotations

import json
import random

import pytest

from app.worker import run_one
from tests.endpoints.conftest import SECRET
from tests.helpers import import_lines, make_project


@pytest.fixture
def world(users):
    return {"admin": users.create("root", "admin"), "engineer": users.create("eve", "engineer"),
            "rater": users.create("ann", "annotator")}  # fmt: skip


def polite_rows(n: int, mumble: int = 0) -> list[dict]:
    """n prompts whose two answers differ by "please" (the polite one is better), shown in a random order; the
    last `mumble` prompts make the fault server's judge answer unparseably."""
    rng = random.Random(3)
    rows = []
    for i in range(n):
        texts = [f"please take item {i}", f"take item {i} now"]
        rng.shuffle(texts)
        tag = " [mumble]" if i >= n - mumble else ""
        rows.append({"prompt": f"Ask for item {i}{tag}", "external_id": f"p{i}",
                     "completions": [{"text": t, "model": "m"} for t in texts]})  # fmt: skip
    return rows


def setup_project(client, world, rows) -> int:
    project = make_project(client, world["admin"], name="Polite")
    response = import_lines(client, world["admin"], project["id"], "\n".join(json.dumps(r) for r in rows).encode())
    assert response.status_code == 200, response.text
    return project["id"]


def rate_politely(client, rater, pid) -> int:
    n = 0
    while True:
        response = client.get(f"/api/v1/projects/{pid}/tasks/next", headers=rater["headers"])
        if response.status_code == 204:
            return n
        task = response.json()
        best = next((o["id"] for o in task["options"] if "please" in o["text"]), task["options"][0]["id"])
        ranking = [[best], [o["id"] for o in task["options"] if o["id"] != best]]
        assert client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", json={"ranking": ranking},
                           headers=rater["headers"]).status_code in (200, 201)  # fmt: skip
        n += 1


def add_endpoint(client, who, **body):
    response = client.post("/api/v1/endpoints", json=body, headers=who["headers"])
    assert response.status_code == 201, response.text


def add_judge(client, world, pid, name, model, **params) -> int:
    response = client.post(f"/api/v1/projects/{pid}/judges", json={"name": name, "method": "generative",
                                                                    "model": model, "params": params},
                           headers=world["engineer"]["headers"])  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def judge_job(client, world, pid, judge, scope="judged") -> dict:
    response = client.post("/api/v1/jobs", json={"kind": "judge", "project_id": pid,
                                                 "params": {"judge": judge, "scope": scope}},
                           headers=world["engineer"]["headers"])  # fmt: skip
    assert response.status_code == 202, response.text
    assert run_one("w1") == response.json()["id"]
    job = client.get(f"/api/v1/jobs/{response.json()['id']}", headers=world["engineer"]["headers"]).json()
    assert job["status"] == "succeeded", job
    return job


def test_an_endpoint_judge_in_both_orders_with_its_agreement_figures(client, world, fault_server):
    pid = setup_project(client, world, polite_rows(12, mumble=2))
    assert rate_politely(client, world["rater"], pid) == 12
    add_endpoint(client, world["engineer"], name="oracle", base_url=fault_server.url, model=fault_server.model,
                 api_key=SECRET, price_input=1.0, price_output=1.0)  # fmt: skip
    judge = add_judge(client, world, pid, "oracle-judge", "oracle")
    fault_server.reset()
    job = judge_job(client, world, pid, judge)
    asked = fault_server.asked("Which response is better")
    assert len(asked) == 12 * 2  # every pair, both orders
    shown = {}
    for request in asked:
        a = request["content"].split("Response A:")[1].split("Response B:")[0].strip()
        shown.setdefault(request["content"].split("Prompt:")[1].split("Response A:")[0].strip(), set()).add(a)
    assert all(len(firsts) == 2 for firsts in shown.values())  # each answer was shown first once
    assert all(r["body"]["logprobs"] is True for r in asked)
    result = job["result"]
    assert result["stored"] == 10 and result["metrics"]["judge/abstentions"] == 2
    assert {a["reason"].split(":")[0] for a in result["abstentions"]} == {"unparseable answer"}
    assert result["metrics"]["judge/tokens_per_1000"] > 0 and result["metrics"]["judge/cost_per_1000"] > 0
    figures = client.get(f"/api/v1/projects/{pid}/judges", headers=world["engineer"]["headers"]).json()
    figure = next(f for j in figures["judges"] if j["id"] == judge for f in j["agreement"])
    assert figure["verdicts"] == 10 and figure["compared"] == 10
    assert figure["accuracy"] == 1.0 and figure["kappa"] is not None
    assert figure["position_bias"] == pytest.approx(0.5)  # P(first) 0.9 when the polite one is first, else 0.1
    page = client.get(f"/projects/{pid}/judges", headers=world["engineer"]["headers"])
    assert page.status_code == 200 and "per 1,000 judgments" in page.text and SECRET not in page.text

    # the same questions are never paid for twice: a second judge on the same endpoint reads the cache
    fault_server.reset()
    again = judge_job(client, world, pid, add_judge(client, world, pid, "oracle-judge-2", "oracle"))
    assert fault_server.asked("Which response is better") == []
    assert again["result"]["metrics"]["judge/questions_cached"] == 24 and again["result"]["stored"] == 10


def test_json_verdicts_and_sampled_agreement(client, world, fault_server):
    pid = setup_project(client, world, polite_rows(4))
    rate_politely(client, world["rater"], pid)
    add_endpoint(client, world["engineer"], name="oracle-json", base_url=fault_server.url, model=fault_server.model,
                 json_output=True)  # fmt: skip
    fault_server.reset()
    job = judge_job(client, world, pid, add_judge(client, world, pid, "json", "oracle-json", samples=3))
    asked = fault_server.asked("Which response is better")
    assert asked and all(r["body"]["response_format"]["type"] == "json_schema" for r in asked)
    assert job["result"]["stored"] == 4 and job["result"]["metrics"]["judge/abstentions"] == 0


def test_confidence_from_sampled_agreement_without_logprobs(client, world, fault_server):
    """A server that returns no log-probabilities: each question is sampled `samples` times (temperature 1) and
    P(first) is the share of answers preferring the first response; with logprobs one greedy answer does."""
    rows = polite_rows(3)
    for row in rows:
        row["prompt"] += " [nologprobs] [coin]"
    pid = setup_project(client, world, rows)
    rate_politely(client, world["rater"], pid)
    add_endpoint(client, world["engineer"], name="oracle-sampled", base_url=fault_server.url, model=fault_server.model)
    fault_server.reset()
    job = judge_job(client, world, pid, add_judge(client, world, pid, "sampled", "oracle-sampled", samples=3))
    asked = fault_server.asked("Which response is better")
    assert len(asked) == 3 * 2 * 3 and all(r["body"]["temperature"] == 1.0 for r in asked)
    assert job["result"]["stored"] == 3

    from app.db import session_scope
    from app.models import AIVerdict

    with session_scope() as db:
        verdicts = db.query(AIVerdict).filter(AIVerdict.job_id == job["id"]).all()
        # two of three answers follow the rule in each order: P(first) 2/3 or 1/3, P(polite wins) 2/3
        assert sorted(round(p, 3) for v in verdicts for p in v.detail["p_first"]) == [0.333] * 3 + [0.667] * 3
        assert [round(v.confidence, 3) for v in verdicts] == [0.667] * 3


def test_a_judge_endpoint_failing_mid_job_abstains_on_those_comparisons_only(client, world, fault_server, fast_retries):
    """Requests that still fail after the retries are abstentions with their reason; the rest are judged."""
    rows = polite_rows(4)
    rows[0]["prompt"] += " [500]"
    pid = setup_project(client, world, rows)
    rate_politely(client, world["rater"], pid)
    add_endpoint(client, world["engineer"], name="oracle-failing", base_url=fault_server.url, model=fault_server.model)
    job = judge_job(client, world, pid, add_judge(client, world, pid, "failing", "oracle-failing"))
    result = job["result"]
    assert result["stored"] == 3 and result["metrics"]["judge/failed_questions"] == 2
    assert [a["reason"].split(":")[0] for a in result["abstentions"]] == ["request failed"]
    assert "HTTP 500" in result["abstentions"][0]["reason"]


@pytest.mark.parametrize(("text", "expected"), [
    ("A", 0), ("B", 1), (" B.", 1), ("Answer: A", 0), ("**B**", 1), ("(A)", 0), ('{"verdict": "B"}', 1),
    ("Response A", 0), ("a", None), ("A or B", None), ("I think A is better", None), ('{"verdict": "C"}', None),
    ("{not json", None), ("", None), ("AB", None),
])  # fmt: skip
def test_verdicts_are_parsed_strictly(text, expected):
    from app.judges.endpoint_judge import parse_verdict

    assert parse_verdict(text, ["A", "B"]) == expected


def test_an_endpoint_judge_against_transformers_serve(client, world, served):
    """A random tiny model rarely answers with a label: what it says is parsed or recorded as an abstention, never
    guessed; every question is asked once and then read from the cache."""
    pid = setup_project(client, world, polite_rows(6))
    rate_politely(client, world["rater"], pid)
    add_endpoint(client, world["engineer"], name="tiny-served", base_url=served.url, model=served.model)
    judge = add_judge(client, world, pid, "tiny", "tiny-served", max_answer_tokens=4)
    first = judge_job(client, world, pid, judge)["result"]
    metrics = first["metrics"]
    assert metrics["judge/questions"] == 12 and metrics["judge/questions_asked"] == 12
    assert metrics["judge/comparisons"] + metrics["judge/abstentions"] == 6
    assert metrics["judge/prompt_tokens"] > 0
    second = judge_job(client, world, pid, judge)["result"]["metrics"]  # only the abstentions are judged again
    assert second["judge/comparisons"] == 0 and second.get("judge/questions_asked", 0) == 0
    assert second.get("judge/questions_cached", 0) == 2 * metrics["judge/abstentions"]


RUBRIC = [{"name": "helpful", "label": "Helpful", "min": 1, "max": 7}, {"name": "brevity", "label": "Brevity", "min": 1,
          "max": 7}, {"name": "mumble", "label": "Mumble", "min": 1, "max": 7}]  # fmt: skip


def rate_with_scores(client, rater, pid) -> int:
    """Humans: the polite answer is best and most helpful, the shorter one scores higher on brevity."""
    n = 0
    while (response := client.get(f"/api/v1/projects/{pid}/tasks/next", headers=rater["headers"])).status_code == 200:
        task = response.json()
        polite = next(o["id"] for o in task["options"] if "please" in o["text"])
        other = next(o["id"] for o in task["options"] if o["id"] != polite)
        attributes = {"helpful": {str(polite): 7, str(other): 2}, "brevity": {str(polite): 3, str(other): 6}}
        assert client.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", headers=rater["headers"],
                           json={"ranking": [[polite], [other]], "attributes": attributes}).status_code in (200, 201)  # fmt: skip
        n += 1
    return n


def test_rubric_judging_per_attribute(client, world, fault_server):
    """Each pair asked in both orders once overall and once per attribute scale; each attribute's verdict recorded
    (brevity's winner is not the overall one), an unparseable attribute an abstention that leaves the rest standing;
    the per-attribute accuracy against the humans' scores on the judges API and page."""
    project = make_project(client, world["admin"], name="Rubric", attributes=RUBRIC)
    pid = project["id"]
    rows = polite_rows(4)
    assert import_lines(client, world["admin"], pid, "\n".join(json.dumps(r) for r in rows).encode()).status_code == 200
    assert rate_with_scores(client, world["rater"], pid) == 4
    add_endpoint(client, world["engineer"], name="rubric-oracle", base_url=fault_server.url, model=fault_server.model)
    judge = add_judge(client, world, pid, "rubric", "rubric-oracle", rubric=True)
    fault_server.reset()
    job = judge_job(client, world, pid, judge)
    asked = fault_server.asked("Which response is better")
    assert len(asked) == 4 * 2 * (1 + 3)
    assert {r["content"].split("Attribute: ")[1].split("\n")[0] for r in asked if "Attribute: " in r["content"]} == {
        "Helpful", "Brevity", "Mumble"}  # fmt: skip
    metrics = job["result"]["metrics"]
    assert job["result"]["stored"] == 4 and metrics["judge/abstentions"] == 0
    assert metrics["judge/attribute_verdicts"] == 8 and metrics["judge/attribute_abstentions"] == 4

    from app.db import session_scope
    from app.models import AIVerdict, Completion

    with session_scope() as db:
        for verdict in db.query(AIVerdict).filter(AIVerdict.judge_id == judge):
            texts = dict(db.query(Completion.id, Completion.text).filter(Completion.id.in_(
                [c for g in verdict.detail["ranking"] for c in g])))  # fmt: skip
            overall = verdict.detail["ranking"][0][0]
            attributes = verdict.detail["attributes"]
            assert "please" in texts[overall] and attributes["helpful"]["ranking"][0] == [overall]
            shorter = min(texts, key=lambda c: len(texts[c]))
            assert attributes["brevity"]["ranking"][0] == [shorter] != [overall]
            assert attributes["brevity"]["confidence"] > 0.5 and len(attributes["brevity"]["p_first"]) == 2
            assert attributes["mumble"]["abstained"].startswith("unparseable answer")
    figures = client.get(f"/api/v1/projects/{pid}/judges", headers=world["engineer"]["headers"]).json()
    figure = next(f for j in figures["judges"] if j["id"] == judge for f in j["agreement"])
    assert figure["accuracy"] == 1.0  # the overall figures as for any judge
    assert figure["attributes"]["helpful"] == {"verdicts": 4, "abstentions": 0, "compared": 4, "accuracy": 1.0}
    assert figure["attributes"]["brevity"]["accuracy"] == 1.0
    assert figure["attributes"]["mumble"] == {"verdicts": 0, "abstentions": 4, "compared": 0, "accuracy": None}
    page = client.get(f"/projects/{pid}/judges", headers=world["engineer"]["headers"]).text
    assert 'id="judge-rubric"' in page and "brevity" in page
    # the judges page's form makes a rubric judge too
    from tests.auth.test_auth import form_csrf, login

    assert login(client, "eve", world["engineer"]["password"]).status_code in (302, 303)
    form = {"csrf_token": form_csrf(client.get(f"/projects/{pid}/judges").text), "name": "from-the-page",
            "method": "generative", "model": "rubric-oracle", "rubric": "true"}  # fmt: skip
    assert client.post(f"/projects/{pid}/judges/new", data=form, follow_redirects=False).status_code == 303
    judges = client.get(f"/api/v1/projects/{pid}/judges", headers=world["engineer"]["headers"]).json()["judges"]
    assert next(j for j in judges if j["name"] == "from-the-page")["params"] == {"rubric": True}

    # rubric judging needs an endpoint judge and a project with attribute scales
    plain = make_project(client, world["admin"], name="Plain")
    response = client.post(f"/api/v1/projects/{plain['id']}/judges", headers=world["engineer"]["headers"],
                           json={"name": "r", "method": "generative", "model": "rubric-oracle", "params": {"rubric": True}})  # fmt: skip
    assert response.status_code == 201
    response = client.post("/api/v1/jobs", headers=world["engineer"]["headers"], json={
        "kind": "judge", "project_id": plain["id"], "params": {"judge": response.json()["id"]}})  # fmt: skip
    assert response.status_code == 422 and "attribute scales" in response.text


def test_rubric_judging_against_transformers_serve(client, world, served):
    """The rubric questions reach the real server: one per pair, order and attribute besides the overall one; each
    verdict stored carries an answer or an abstention per attribute."""
    pid = make_project(client, world["admin"], name="Rubric served", attributes=RUBRIC[:2])["id"]
    rows = polite_rows(3)
    assert import_lines(client, world["admin"], pid, "\n".join(json.dumps(r) for r in rows).encode()).status_code == 200
    rate_with_scores(client, world["rater"], pid)
    add_endpoint(client, world["engineer"], name="tiny-rubric", base_url=served.url, model=served.model)
    judge = add_judge(client, world, pid, "tiny-rubric", "tiny-rubric", max_answer_tokens=4, rubric=True)
    metrics = judge_job(client, world, pid, judge)["result"]["metrics"]
    assert metrics["judge/questions"] == 3 * 2 * 3 and metrics["judge/questions_asked"] == 18
    assert metrics["judge/comparisons"] + metrics["judge/abstentions"] == 3
    assert metrics["judge/attribute_verdicts"] + metrics["judge/attribute_abstentions"] == 2 * metrics["judge/comparisons"]
