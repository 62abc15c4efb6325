"""Live battles through the API (SQLite and PostgreSQL): a battle against the real `transformers serve` (two
versions served by it), streamed as server-sent events, a follow-up, the vote, the leaderboard and a conversational
export; then the faults (a failing side voids, the rate limit, the blocklist) and bad input."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.worker import run_one
from tests.helpers import make_project


@pytest.fixture
def people(users):
    return {"admin": users.create("root", "admin"), "rater": users.create("ann", "annotator"),
            "other": users.create("bob", "annotator")}  # fmt: skip


SAMPLING = {"temperature": 1.0, "top_p": 1.0}
"""The tiny checkpoint is untrained: greedy decoding repeats one blank token, sampling writes visible words."""


def add_endpoint(client, admin, name, url, model, project_id) -> None:
    response = client.post("/api/v1/endpoints", json={"name": name, "base_url": url, "model": model,
                                                      "project_id": project_id, "timeout_seconds": 60,
                                                      "sampling": SAMPLING}, headers=admin["headers"])  # fmt: skip
    assert response.status_code == 201, response.text


def battle_project(client, admin, versions: dict[str, tuple[str, str]], **settings) -> dict:
    project = make_project(client, admin, name="Arena")
    for name, (url, model) in versions.items():
        add_endpoint(client, admin, name, url, model, project["id"])
    response = client.put(f"/api/v1/projects/{project['id']}/battle-settings",
                          json={"enabled": True, "versions": list(versions), "max_tokens": 8} | settings,
                          headers=admin["headers"])  # fmt: skip
    assert response.status_code == 200, response.text
    return project


def events_of(client, who, battle_id: int, turn: int) -> list[tuple[str, dict]]:
    """The turn's server-sent events, in order."""
    events = []
    with client.stream("POST", f"/api/v1/battles/{battle_id}/turns/{turn}/stream", headers=who["headers"]) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join(response.iter_text())
    for block in body.split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_battle_against_transformers_serve(client, people, served, db):
    from app.models import Comparison, Completion, Judgment

    admin, rater = people["admin"], people["rater"]
    project = battle_project(client, admin, {"tiny-left": (served.url, served.model),
                                             "tiny-right": (served.url, served.model)})  # fmt: skip
    started = client.post(f"/api/v1/projects/{project['id']}/battles", json={"prompt": "Tell me about cats."},
                          headers=rater["headers"])  # fmt: skip
    assert started.status_code == 201, started.text
    battle = started.json()
    assert battle["pending_turn"] == 0 and not battle["can_vote"]
    assert "tiny-left" not in started.text and "tiny-right" not in started.text  # anonymous before the vote

    events = events_of(client, rater, battle["id"], 0)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "end"
    assert events[-1][1] == {"turn_status": "answered", "battle_status": "open"}, events
    for side in ("a", "b"):
        deltas = [data["text"] for name, data in events if name == "delta" and data["side"] == side]
        assert deltas, f"side {side} streamed nothing"
        assert names.index("delta") < names.index("done")  # pieces come before the sides finish
    assert "error" not in names
    # streaming the same turn again asks nobody: what was recorded comes back
    again = events_of(client, rater, battle["id"], 0)
    assert [n for n, _ in again][-1] == "end"

    state = client.get(f"/api/v1/battles/{battle['id']}", headers=rater["headers"]).json()
    assert state["can_vote"] and state["revealed"] is None
    assert state["turns"][0]["answer_a"] == "".join(d["text"] for n, d in events if n == "delta" and d["side"] == "a")
    # another rater cannot see or stream it
    assert client.get(f"/api/v1/battles/{battle['id']}", headers=people["other"]["headers"]).status_code == 404
    assert client.post(f"/api/v1/battles/{battle['id']}/turns/0/stream",
                       headers=people["other"]["headers"]).status_code == 404  # fmt: skip

    follow = client.post(f"/api/v1/battles/{battle['id']}/turns", json={"prompt": "And dogs?"}, headers=rater["headers"])
    assert follow.status_code == 201, follow.text
    assert follow.json()["pending_turn"] == 1
    assert [n for n, _ in events_of(client, rater, battle["id"], 1)][-1] == "end"

    voted = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"verdict": "a"}, headers=rater["headers"])
    assert voted.status_code == 200, voted.text
    result = voted.json()
    assert result["created"] and set(result["revealed"].values()) == {"tiny-left", "tiny-right"}
    twice = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"verdict": "b"}, headers=rater["headers"]).json()
    assert twice["judgment_id"] == result["judgment_id"] and not twice["created"]
    assert db.scalar(select(func.count()).select_from(Judgment)) == 1
    judgment = db.get(Judgment, result["judgment_id"])
    comparison = db.get(Comparison, judgment.comparison_id)
    winner = db.get(Completion, judgment.top_completion_id)
    assert judgment.source == "battle" and winner.model_name == result["revealed"]["a"]
    assert comparison.n_judgments == 1 and comparison.required == 1  # never served in the rating queue
    assert len(winner.meta["messages"]) == 3  # answer, follow-up, answer

    board = client.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=admin["headers"]).json()
    assert {m["name"]: m["battles"] for m in board["models"]} == {"tiny-left": 1, "tiny-right": 1}

    export = client.post(f"/api/v1/projects/{project['id']}/datasets", json={
        "format": "pairs", "conversational": True, "filters": {"sources": ["battle"]}}, headers=admin["headers"]).json()  # fmt: skip
    assert run_one("w1") == export["job_id"]
    dataset = client.get(f"/api/v1/datasets/{export['id']}", headers=admin["headers"]).json()
    lines = [line for name in dataset["files"] if name.endswith(".jsonl")  # one row: in train or in test
             for line in client.get(f"/api/v1/datasets/{export['id']}/files/{name}", headers=admin["headers"]).text.splitlines()
             if line.strip()]  # fmt: skip
    assert len(lines) == 1, (dataset, lines)
    row = json.loads(lines[0])
    assert row["prompt"] == [{"role": "user", "content": "Tell me about cats."}]
    assert [m["role"] for m in row["chosen"]] == ["assistant", "user", "assistant"]
    assert row["chosen"][1]["content"] == "And dogs?"
    # Left to "auto", a multi-turn battle makes the export conversational; forced standard, it is refused (its last
    # answer answers the follow-up, not the prompt), never written as a mismatched pair.
    for conversational, status in ((None, "ready"), (False, "failed")):
        spec = {"format": "pairs", "filters": {"sources": ["battle"]}} | (
            {} if conversational is None else {"conversational": conversational})  # fmt: skip
        export = client.post(f"/api/v1/projects/{project['id']}/datasets", json=spec, headers=admin["headers"]).json()
        run_one("w1")
        dataset = client.get(f"/api/v1/datasets/{export['id']}", headers=admin["headers"]).json()
        assert dataset["status"] == status, dataset
        if conversational is None:
            manifest = client.get(f"/api/v1/datasets/{export['id']}/files/manifest.json", headers=admin["headers"])
            assert manifest.json()["conversational"] is True, manifest.text
        else:
            assert "conversational=True" in (dataset.get("error") or ""), dataset


def test_a_failing_side_voids_the_battle(client, people, served, fault_server, db):
    from app.models import Judgment

    project = battle_project(client, people["admin"], {"tiny": (served.url, served.model),
                                                       "broken": (fault_server.url, fault_server.model)})  # fmt: skip
    rater = people["rater"]
    battle = client.post(f"/api/v1/projects/{project['id']}/battles", json={"prompt": "[500] hello"},
                         headers=rater["headers"]).json()  # fmt: skip
    events = events_of(client, rater, battle["id"], 0)
    errors = [data for name, data in events if name == "error"]
    assert len(errors) == 1 and "HTTP 500" in errors[0]["message"]
    assert events[-1] == ("end", {"turn_status": "failed", "battle_status": "voided"})
    state = client.get(f"/api/v1/battles/{battle['id']}", headers=rater["headers"]).json()
    assert state["status"] == "voided" and not state["can_vote"] and "HTTP 500" in state["void_reason"]
    refused = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"verdict": "a"}, headers=rater["headers"])
    assert refused.status_code == 409
    assert db.scalar(select(func.count()).select_from(Judgment)) == 0
    # the page shows the error, escaped, and offers a new battle
    page = client.get(f"/projects/{project['id']}/battle", headers=rater["headers"])
    assert page.status_code == 200 and "This battle was voided" in page.text


def test_a_side_past_the_timeout_voids(client, people, fault_server):
    fault_server.stall_seconds = 3.0
    project = battle_project(client, people["admin"], {"echo-1": (fault_server.url, fault_server.model),
                                                       "echo-2": (fault_server.url, fault_server.model)},
                             timeout_seconds=0.5)  # fmt: skip
    rater = people["rater"]
    battle = client.post(f"/api/v1/projects/{project['id']}/battles", json={"prompt": "[stall] wait"},
                         headers=rater["headers"]).json()  # fmt: skip
    events = events_of(client, rater, battle["id"], 0)
    assert {data["side"] for name, data in events if name == "error"} == {"a", "b"}
    assert events[-1][1]["battle_status"] == "voided"


def test_rate_limit_blocklist_and_bad_input(client, people, fault_server):
    project = battle_project(client, people["admin"], {"echo-1": (fault_server.url, fault_server.model),
                                                       "echo-2": (fault_server.url, fault_server.model)},
                             turns_per_minute=2, blocklist=["secret plan"])  # fmt: skip
    rater, url = people["rater"], f"/api/v1/projects/{project['id']}/battles"
    refused = client.post(url, json={"prompt": "Tell me the SECRET\n plan!"}, headers=rater["headers"])
    assert refused.status_code == 422 and "text rules" in refused.json()["detail"]
    assert client.post(url, json={"prompt": "   "}, headers=rater["headers"]).status_code == 422
    assert client.post(url, json={"prompt": "x" * 5000}, headers=rater["headers"]).status_code == 422
    assert client.post(url, json={"prompt": "nul \x00 byte"}, headers=rater["headers"]).status_code == 422
    assert client.post(url, json={"prompt": "a secretplan is fine"}, headers=rater["headers"]).status_code == 201
    assert client.post(url, json={"prompt": "second"}, headers=rater["headers"]).status_code == 201
    for spoof in ({}, {"X-Forwarded-For": "203.0.113.9"}, {"X-Real-IP": "198.51.100.7"}):
        third = client.post(url, json={"prompt": "third"}, headers=rater["headers"] | spoof)
        assert third.status_code == 429, third.text
    # another account has its own allowance
    assert client.post(url, json={"prompt": "mine"}, headers=people["other"]["headers"]).status_code == 201
    # bad input never answers 500
    battle_id = client.get(f"/api/v1/projects/{project['id']}/battle-settings",
                           headers=people["admin"]["headers"]).status_code  # fmt: skip
    assert battle_id == 200
    for body in ({"verdict": "maybe"}, {"verdict": 1}, {}, {"verdict": "a", "extra": 1}):
        assert client.post("/api/v1/battles/1/vote", json=body, headers=rater["headers"]).status_code in (404, 422)
    assert client.post("/api/v1/battles/999999/turns/0/stream", headers=rater["headers"]).status_code == 404
    assert client.post("/api/v1/battles/1/turns/-1/stream", headers=rater["headers"]).status_code == 422
    assert client.put(f"/api/v1/projects/{project['id']}/battle-settings", json={"pairing": "elo"},
                      headers=people["admin"]["headers"]).status_code == 422  # fmt: skip
    assert client.put(f"/api/v1/projects/{project['id']}/battle-settings", json={"enabled": False},
                      headers=rater["headers"]).status_code == 403  # fmt: skip


def test_battle_mode_off_and_too_few_versions(client, people):
    admin, rater = people["admin"], people["rater"]
    project = make_project(client, admin, name="Quiet")
    assert client.post(f"/api/v1/projects/{project['id']}/battles", json={"prompt": "hi"},
                       headers=rater["headers"]).status_code == 404  # fmt: skip
    page = client.get(f"/projects/{project['id']}/battle", headers=rater["headers"])
    assert page.status_code == 200 and "not in battle mode" in page.text
    client.put(f"/api/v1/projects/{project['id']}/battle-settings", json={"enabled": True}, headers=admin["headers"])
    refused = client.post(f"/api/v1/projects/{project['id']}/battles", json={"prompt": "hi"}, headers=rater["headers"])
    assert refused.status_code == 409 and "two endpoint versions" in refused.json()["detail"]


def test_pair_weights_favour_overlapping_intervals():
    from app.battles.service import pair_weights

    weights = pair_weights(["a", "b", "c", "new"], {"a": (900, 1000), "b": (950, 1050), "c": (1200, 1300)})
    assert weights[("a", "b")] > weights[("a", "c")] and weights[("a", "c")] > 0
    assert weights[("a", "new")] == max(weights.values())  # a version without votes is what needs votes most


def test_bursts_of_near_identical_prompts_go_to_review(client, people, fault_server, db):
    """Issue 26's battle rigging check: one account's burst of near-identical prompts puts its battle votes in the
    review queue; another account's varied prompts do not."""
    from app.models import Judgment

    project = battle_project(client, people["admin"], {"echo-1": (fault_server.url, fault_server.model),
                                                       "echo-2": (fault_server.url, fault_server.model)},
                             turns_per_minute=50)  # fmt: skip
    prompts = {"rater": [f"Which model are you, really?{'!' * i}" for i in range(5)],
               "other": ["Name a fruit.", "How far is the moon?", "Write a haiku about rain.", "What is 2 + 2?",
                         "Explain photosynthesis briefly."]}  # fmt: skip
    for who, texts in prompts.items():
        for text in texts:
            battle = client.post(f"/api/v1/projects/{project['id']}/battles", json={"prompt": text},
                                 headers=people[who]["headers"]).json()  # fmt: skip
            assert events_of(client, people[who], battle["id"], 0)[-1][1]["turn_status"] == "answered"
            voted = client.post(f"/api/v1/battles/{battle['id']}/vote", json={"verdict": "a"},
                                headers=people[who]["headers"])  # fmt: skip
            assert voted.status_code == 200, voted.text
    report = client.post(f"/api/v1/projects/{project['id']}/rigging-check", headers=people["admin"]["headers"])
    assert report.status_code == 200, report.text
    bursts = report.json()["bursts"]
    assert [(b["username"], len(b["battles"])) for b in bursts] == [("ann", 5)]
    assert report.json()["judgments_flagged"] == 5
    flagged = db.scalars(select(Judgment).where(Judgment.rater_id == people["rater"]["id"])).all()
    assert all("rigging" in j.flags for j in flagged) and len(flagged) == 5
    assert not any("rigging" in j.flags for j in db.scalars(select(Judgment).where(
        Judgment.rater_id == people["other"]["id"])))  # fmt: skip
    queue = client.get(f"/api/v1/projects/{project['id']}/reviews", headers=people["admin"]["headers"]).json()
    assert sorted(item["judgment_id"] for item in queue if "rigging" in item["flags"]) == sorted(j.id for j in flagged)
    again = client.post(f"/api/v1/projects/{project['id']}/rigging-check", headers=people["admin"]["headers"]).json()
    assert again["judgments_flagged"] == 0  # flagged once


def test_prompt_bursts_window_and_similarity():
    from datetime import UTC, datetime, timedelta

    from app.quality.rigging import RiggingArgs, prompt_bursts

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    args = RiggingArgs(burst_window_minutes=10, burst_min_prompts=3)
    spread = [(i, 1, t0 + timedelta(minutes=6 * i), "Are you GPT?") for i in range(3)]  # 12 minutes: no burst
    assert prompt_bursts(spread, args) == []
    tight = [(i, 1, t0 + timedelta(minutes=i), f"are you gpt{'?' * i}") for i in range(3)]
    assert prompt_bursts(tight, args)[0]["battles"] == [0, 1, 2]
    varied = [(i, 1, t0 + timedelta(seconds=i), text) for i, text in enumerate(["cats", "orbital mechanics", "soup"])]
    assert prompt_bursts(varied, args) == []


def test_model_and_prompt_text_are_escaped_on_the_page(client, people, fault_server):
    project = battle_project(client, people["admin"], {"echo-1": (fault_server.url, fault_server.model),
                                                       "echo-2": (fault_server.url, fault_server.model)})  # fmt: skip
    rater = people["rater"]
    battle = client.post(f"/api/v1/projects/{project['id']}/battles", json={"prompt": "<script>alert(1)</script>"},
                         headers=rater["headers"]).json()  # fmt: skip
    events_of(client, rater, battle["id"], 0)
    page = client.get(f"/projects/{project['slug']}/battle", headers=rater["headers"])
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert "echo-1" not in page.text and "echo-2" not in page.text  # no name before the vote


def test_battle_settings_page_turns_battle_mode_on_and_refuses_bad_input(client, people):
    """Staff turn battle mode on by clicking (the form of the battle-settings API, its fields from BattleSettings);
    raters may not open it; bad values get 422 and change nothing; no CSRF, no change."""
    from tests.auth.test_auth import login, session_csrf

    admin = people["admin"]
    project = make_project(client, admin, name="Clicked arena")
    off = client.get(f"/projects/{project['slug']}/battle", headers=admin["headers"] | {"Accept": "text/html"})
    assert f'href="/projects/{project["slug"]}/battle/settings"' in off.text  # reachable from the Battle page
    login(client, "ann", people["rater"]["password"])
    assert client.get(f"/projects/{project['slug']}/battle/settings").status_code == 403
    client.cookies.clear()
    login(client, "root", admin["password"])
    page = client.get(f"/projects/{project['slug']}/battle/settings")
    assert page.status_code == 200 and 'name="turns_per_minute"' in page.text and 'name="blocklist"' in page.text
    url = f"/projects/{project['slug']}/battle/settings"
    form = {"enabled": "1", "pairing": "overlap", "max_tokens": "64", "timeout_seconds": "12.5", "max_turns": "3",
            "max_prompt_chars": "500", "turns_per_minute": "4", "turns_per_hour": "40", "reveal": "1",
            "versions": "", "blocklist": "forbidden phrase\n<b>bold</b>\n"}  # fmt: skip
    assert client.post(url, data=form).status_code == 403  # no CSRF token
    csrf = session_csrf(client)
    for bad in ({"max_tokens": "0"}, {"pairing": "random"}, {"timeout_seconds": "abc"}, {"max_turns": "\x00"}):
        response = client.post(url, data=form | bad | {"csrf_token": csrf})
        assert response.status_code == 422, (bad, response.status_code)
    assert client.get(f"/api/v1/projects/{project['id']}/battle-settings",
                      headers=admin["headers"]).json()["enabled"] is False  # fmt: skip
    saved = client.post(url, data=form | {"csrf_token": csrf}, follow_redirects=False)
    assert saved.status_code == 303
    settings = client.get(f"/api/v1/projects/{project['id']}/battle-settings", headers=admin["headers"]).json()
    assert settings | {"blocklist": None} == {
        "enabled": True, "versions": [], "pairing": "overlap", "reveal": True, "max_tokens": 64,
        "timeout_seconds": 12.5, "max_turns": 3, "max_prompt_chars": 500, "turns_per_minute": 4,
        "turns_per_hour": 40, "blocklist": None}  # fmt: skip
    assert settings["blocklist"] == ["<b>bold</b>", "forbidden phrase"]
    shown = client.get(url)
    assert "&lt;b&gt;bold&lt;/b&gt;" in shown.text and "<b>bold</b>" not in shown.text
    # An unticked box is off.
    form.pop("reveal")
    client.post(url, data=form | {"csrf_token": csrf})
    assert client.get(f"/api/v1/projects/{project['id']}/battle-settings",
                      headers=admin["headers"]).json()["reveal"] is False  # fmt: skip
