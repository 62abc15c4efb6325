"""A live battle in Chromium against the real `transformers serve` (the endpoint tests' server fixture; the browser
flows run in a pytest process of their own, where this is its only user): type a prompt, both answers stream (the first pieces are on screen while
the stream is still open: the page's DOM is sampled on every change), vote by key, a follow-up turn, the models'
names revealed, the judgment in the leaderboard and in a conversational export."""

from __future__ import annotations

import json
import re

import pytest

from app.worker import run_one
from tests.e2e.conftest import login, screenshot
from tests.endpoints.conftest import served, tiny_checkpoint  # noqa: F401 - fixtures: the shared transformers serve
from tests.endpoints.test_battles import SAMPLING

pytestmark = [pytest.mark.e2e, pytest.mark.only_db("sqlite")]

RECORD = """() => {
  window.battleLog = [];
  const snap = () => {
    const stream = document.getElementById("battle-stream");
    const pane = (side, turn) => document.querySelector(`.battle-answer[data-side="${side}"][data-turn="${turn}"]`);
    for (const turn of [0, 1]) {
      const a = pane("a", turn), b = pane("b", turn);
      if (!a || !b) continue;
      window.battleLog.push({turn, a: a.textContent.length, b: b.textContent.length,
                             state: stream && stream.dataset.turn === String(turn) ? stream.dataset.state : "none"});
    }
  };
  new MutationObserver(snap).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                     attributes: true});
}"""


def streamed_while_open(log: list[dict], turn: int, side: str, final_length: int) -> list[int]:
    """The lengths of one side's text seen while the turn's stream was still open."""
    return sorted({entry[side] for entry in log if entry["turn"] == turn and entry["state"] == "streaming"
                   and entry[side] > 0})  # fmt: skip


def test_a_live_battle_in_the_browser(page, api, users, served, db_url):  # noqa: F811 - fixtures
    admin, rater = users.create("root", "admin"), users.create("ann", "annotator")
    project = api.post("/api/v1/projects", json={"name": "Live arena", "mode": "pairwise"}, headers=admin["headers"]).json()
    for name in ("tiny-north", "tiny-south"):
        created = api.post("/api/v1/endpoints", json={"name": name, "base_url": served.url, "model": served.model,
                                                      "project_id": project["id"], "sampling": SAMPLING},
                           headers=admin["headers"])  # fmt: skip
        assert created.status_code == 201, created.text
    settings = api.put(f"/api/v1/projects/{project['id']}/battle-settings", headers=admin["headers"],
                       json={"enabled": True, "versions": ["tiny-north", "tiny-south"], "max_tokens": 24})  # fmt: skip
    assert settings.status_code == 200, settings.text

    login(page, rater)
    page.goto("/projects")
    page.click("text=Live arena")
    page.click("nav.project-nav >> text=Battle")
    # the click starts it; wait until loaded (a limit, not a timing check: as the Steps page's in test_step_labels)
    page.wait_for_url(re.compile(rf"/projects/{project['slug']}/battle$"), timeout=30_000)
    page.evaluate(RECORD)
    page.fill("#battle-prompt", "Tell me a story about a lighthouse.")
    page.press("#battle-prompt", "Control+Enter")
    page.wait_for_selector("#battle-vote button[data-verdict='a']", timeout=120_000)
    assert "tiny-north" not in page.inner_text("main") and "tiny-south" not in page.inner_text("main")

    battle = api.get(f"/api/v1/battles/{json.loads(page.get_attribute('.battle', 'data-battle-id'))}",
                     headers=rater["headers"]).json()  # fmt: skip
    log = page.evaluate("window.battleLog")
    for side in ("a", "b"):
        final = len(battle["turns"][0][f"answer_{side}"])
        seen = streamed_while_open(log, 0, side, final)
        # the text grew on screen across events while the stream was open, and its first pieces were there before
        # the whole answer was
        assert len(seen) >= 2 and seen[0] < final, (side, seen, final)
    screenshot(page, "battle-answered")

    page.fill("form[action$='/turns'] #battle-prompt", "And then what happened?")
    page.press("form[action$='/turns'] #battle-prompt", "Control+Enter")
    page.wait_for_selector(".battle-turn[data-turn='1']")
    page.wait_for_selector("#battle-vote button[data-verdict='a']", timeout=120_000)
    assert page.locator(".battle-turn").count() == 2

    page.keyboard.press("1")
    page.wait_for_selector(".battle-result")
    revealed = {el.get_attribute("data-side"): el.inner_text() for el in page.locator(".battle-reveal").all()}
    assert set(revealed.values()) == {"tiny-north", "tiny-south"}
    assert "A is better" in page.inner_text(".battle-result")
    screenshot(page, "battle-revealed")

    board = api.get(f"/api/v1/projects/{project['id']}/leaderboard", headers=admin["headers"]).json()
    assert {m["name"]: m["battles"] for m in board["models"]} == {"tiny-north": 1, "tiny-south": 1}
    export = api.post(f"/api/v1/projects/{project['id']}/datasets", headers=admin["headers"], json={
        "format": "pairs", "conversational": True, "filters": {"sources": ["battle"]}}).json()  # fmt: skip
    assert run_one("w1") == export["job_id"]
    dataset = api.get(f"/api/v1/datasets/{export['id']}", headers=admin["headers"]).json()
    rows = [json.loads(line) for name in dataset["files"] if name.endswith(".jsonl")
            for line in api.get(f"/api/v1/datasets/{export['id']}/files/{name}", headers=admin["headers"]).text.splitlines()
            if line.strip()]  # fmt: skip
    assert len(rows) == 1
    assert rows[0]["prompt"] == [{"role": "user", "content": "Tell me a story about a lighthouse."}]
    assert rows[0]["chosen"][1] == {"role": "user", "content": "And then what happened?"}
    assert rows[0]["chosen"][0]["content"] == battle["turns"][0]["answer_a"]  # A won: its conversation is chosen
