"""Conversations on the rating page (issue 24, point 2), in real Chromium at 1280x800.

A 30-turn conversation with tool calls: the earlier turns collapse, and the last user turn, both candidate
continuations and the sticky decision bar are inside the window together, without overlap. A verdict key pressed
before the answers were on screen stores nothing (checked through the API); once they were, it stores the verdict.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.e2e.conftest import login, screenshot
from tests.helpers import import_lines, make_project

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT = 1280, 800
SHOTS = os.environ.get("RANKFORGE_CONVERSATION_SHOTS")  # a folder: keep the screenshots (the note's pictures)


def long_history(turns: int = 30) -> list[dict]:
    """A system message and `turns` user/assistant turns, some assistant turns calling a tool, ending with a user."""
    messages: list[dict] = [{"role": "system", "content": "You are a travel agent with a flight search tool."}]
    for turn in range(turns // 2):
        messages.append({"role": "user", "content": f"Turn {turn}: what about flights to city {turn}? " * 3})
        if turn % 3 == 0:
            call_id = f"call_{turn}"
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": "search_flights", "arguments": json.dumps({"to": f"city {turn}", "max": 3})}}]})
            messages.append({"role": "tool", "tool_call_id": call_id,
                             "content": json.dumps({"flights": [{"id": f"F{turn}{k}", "price": 100 + k} for k in range(40)]})})
        messages.append({"role": "assistant", "content": f"For city {turn} the cheapest flight costs {100 + turn} euros."})
    messages[-1:] = []  # the conversation ends with the user's turn being answered
    messages.append({"role": "user", "content": "LAST USER TURN: book the cheapest flight to city 14 for Friday."})
    return messages


CONTINUATIONS = [
    [{"role": "assistant", "content": None, "reasoning": "The user wants the cheapest; search first, then book.",
      "tool_calls": [{"id": "call_book", "type": "function",
                      "function": {"name": "book_flight", "arguments": json.dumps({"flight": "F140", "day": "Friday"})}}]},
     {"role": "tool", "tool_call_id": "call_book", "content": json.dumps({"status": "booked", "ref": "XK42"})},
     {"role": "assistant", "content": "ANSWER ONE: booked flight F140 on Friday, reference XK42."}],
    [{"role": "assistant", "content": "ANSWER TWO: I cannot book flights, but F140 is the cheapest one on Friday."}],
]


def seed_conversation(api, admin) -> dict:
    history = long_history()
    assert sum(m["role"] in ("user", "assistant") for m in history) >= 30
    rows = [{"messages": history + continuation} for continuation in CONTINUATIONS]
    project = make_project(api, admin, name="Conversation e2e", mode="pairwise", allow_ties=True)
    data = ("\n".join(json.dumps(row) for row in rows) + "\n").encode()
    response = import_lines(api, admin, project["id"], data, fmt="openai-chat")
    assert response.status_code == 200, response.text
    return project


def box(page, selector: str) -> dict:
    found = page.locator(selector)
    assert found.count() == 1, (selector, found.count())
    return found.bounding_box()


def judgments(api, admin, project) -> int:
    response = api.get(f"/api/v1/projects/{project['id']}/stats", headers=admin["headers"])
    assert response.status_code == 200, response.text
    return response.json()["judgments"]


def inside(b: dict) -> bool:
    return b["x"] >= 0 and b["y"] >= 0 and b["x"] + b["width"] <= WIDTH and b["y"] + b["height"] <= HEIGHT


def test_a_long_conversation_fits_one_screen_with_tool_calls(page, api, users):
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = seed_conversation(api, admin)
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    page.wait_for_selector("#judgment-form.is-conversation")
    page.evaluate("() => document.body.offsetHeight")
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "issue-24-conversation-rating-1280x800.png"))

    # Earlier turns collapse into one group of one-line summaries; the last user turn is shown open.
    assert page.locator("#earlier-turns").get_attribute("open") is None
    assert page.locator("#earlier-turns .turn-collapsed").count() >= 30
    assert "LAST USER TURN" in page.locator(".last-user-turn").inner_text()

    last_user, bar = box(page, ".last-user-turn"), box(page, "#judgment-form .decision")
    options = [o.bounding_box() for o in page.locator("#judgment-form .option").all()]
    assert len(options) == 2
    for b in [last_user, bar, *options]:
        assert inside(b), (b, "outside the 1280x800 window")
    for b in [last_user, *options]:  # nothing under the sticky bar
        assert b["y"] + b["height"] <= bar["y"] + 0.5, (b, bar)
    assert last_user["y"] + last_user["height"] <= min(o["y"] for o in options)

    # Tool calls show as named calls with pretty-printed arguments; reasoning is collapsed.
    call = page.locator(".option .tool-call").first
    assert "book_flight" in call.locator("summary").inner_text()
    call.locator("summary").click()
    assert '"flight": "F140"' in call.locator(".tool-args").inner_text()
    assert page.locator(".option .msg-reasoning").first.get_attribute("open") is None
    assert page.locator("#seen-note").is_hidden()

    # H opens the earlier turns (they scroll inside their own box); a click expands one turn; a long tool result
    # is cut with "Show all".
    page.keyboard.press("h")
    assert page.locator("#earlier-turns").get_attribute("open") is not None
    first_tool = page.locator("#earlier-turns .turn-collapsed.collapsed-tool").first
    first_tool.locator(":scope > summary").click()
    first_tool.locator(".tool-result > summary").click()
    assert first_tool.locator("[data-action=show-all]").is_visible()
    first_tool.locator("[data-action=show-all]").click()  # the whole result, fetched
    first_tool.locator(".full-text").wait_for()
    whole = first_tool.locator(".full-text").inner_text()
    assert '"F039"' in whole and '\n  "flights": [' in whole  # pretty-printed, as in the clipped view
    screenshot(page, "conversation-earlier-open")
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "issue-24-conversation-earlier-turns-open.png"))

    page.keyboard.press("h")
    page.keyboard.press("1")  # both answers were on screen from the start: the verdict counts
    page.wait_for_selector(".empty-queue", timeout=10_000)
    assert judgments(api, admin, project) == 1


def test_a_verdict_key_before_the_answers_were_shown_stores_nothing(page, api, users):
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    prompt = "\n\n".join(f"Paragraph {i} of a long prompt that pushes the answers below the fold." for i in range(60))
    project = make_project(api, admin, name="Seen gate e2e", mode="pairwise", allow_ties=True)
    row = {"prompt": prompt, "completions": [{"text": "First answer."}, {"text": "Second answer."}]}
    response = import_lines(api, admin, project["id"], (json.dumps(row) + "\n").encode())
    assert response.status_code == 200, response.text
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    page.wait_for_selector("#judgment-form")
    assert page.locator("#seen-note").is_visible()  # the page says verdicts wait
    action = page.locator("#judgment-form").get_attribute("action")

    for key in ["1", "2", "t", "x"]:
        page.keyboard.press(key)
    page.locator("[data-action=prefer]").first.dispatch_event("click")  # the bar's buttons wait too (no scroll)
    assert "Not yet" in page.locator("#judgment-message").inner_text()
    page.keyboard.press("Enter")
    assert judgments(api, admin, project) == 0
    assert page.locator("#judgment-form").get_attribute("action") == action  # the same task, nothing sent

    page.locator("#judgment-form .option").last.scroll_into_view_if_needed()
    page.wait_for_function("() => !document.getElementById('judgment-form').classList.contains('is-unseen')")
    assert page.locator("#seen-note").is_hidden()
    page.keyboard.press("2")
    page.wait_for_selector(".empty-queue", timeout=10_000)
    assert judgments(api, admin, project) == 1


def test_whole_trajectories_compare_as_numbered_steps_on_one_screen(page, api, users):
    from tests.imports.test_conversations import swe_traj

    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = make_project(api, admin, name="Trajectories e2e", mode="pairwise", allow_ties=True)
    runs = [swe_traj(["ls -F", "open src/fields.py 1474", "edit 1475:1475", "python reproduce.py", "submit"]),
            swe_traj(["find_file fields.py", "submit"], exit_status="exit_cost")]  # fmt: skip
    data = "".join(json.dumps(run) + "\n" for run in runs).encode()
    response = import_lines(api, admin, project["id"], data, fmt="swe-agent")
    assert response.status_code == 200, response.text
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    page.wait_for_selector("#judgment-form.is-conversation")
    page.evaluate("() => document.body.offsetHeight")
    steps = [page.locator(f"#option-{i} .step").count()
             for i in json.loads(page.locator("#judgment-form").get_attribute("data-option-ids"))]  # fmt: skip
    assert sorted(steps) == [3, 6]  # each action with its observation, then the outcome
    assert "ISSUE: fields.TimeDelta" in page.locator(".last-user-turn").inner_text()
    bar = box(page, "#judgment-form .decision")
    for option in page.locator("#judgment-form .option").all():
        b = option.bounding_box()
        assert inside(b) and b["y"] + b["height"] <= bar["y"] + 0.5, (b, bar)
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "issue-24-trajectory-rating-1280x800.png"))
    page.keyboard.press("2")
    page.wait_for_selector(".empty-queue", timeout=10_000)
    assert judgments(api, admin, project) == 1


def test_the_longest_hh_rlhf_transcript_fits_one_screen(page, api, users):
    """The issue's own case: an HH-RLHF transcript of 18 human turns (real data, ../shared/data) at 1280x800."""
    from tests.imports.test_parsers import HH_FILE

    if not HH_FILE.is_file():
        pytest.skip(f"reference data not found: {HH_FILE}")
    lines = HH_FILE.read_text(encoding="utf-8").splitlines()
    longest = max(lines, key=lambda line: json.loads(line)["chosen"].count("\n\nHuman:"))
    assert json.loads(longest)["chosen"].count("\n\nHuman:") >= 15
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = make_project(api, admin, name="HH-RLHF e2e", mode="pairwise", allow_ties=True)
    response = import_lines(api, admin, project["id"], (longest + "\n").encode(), fmt="hh-rlhf")
    assert response.status_code == 200, response.text
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    page.wait_for_selector("#judgment-form.is-conversation")
    page.evaluate("() => document.body.offsetHeight")
    assert page.locator("#earlier-turns .turn-collapsed").count() >= 30
    bar = box(page, "#judgment-form .decision")
    for b in [box(page, ".last-user-turn"), *(o.bounding_box() for o in page.locator("#judgment-form .option").all())]:
        assert inside(b) and b["y"] + b["height"] <= bar["y"] + 0.5, (b, bar)
    assert page.locator("#seen-note").is_hidden()
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "issue-24-hh-rlhf-18-turns-1280x800.png"))
