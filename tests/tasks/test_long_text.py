"""Long texts on the rating page (issue 10, point 5), without a browser: clipped, and the whole only for its rater."""

from __future__ import annotations

import json

from app.tasks.views import CLIP_CHARS, clipped_markdown
from tests.helpers import import_lines, make_project


def test_clipping_keeps_short_texts_whole_and_long_words_plain():
    assert clipped_markdown("hi *there*")["html"] == "<p>hi <em>there</em></p>\n"
    long = clipped_markdown("word " * 10_000)
    assert long["clipped"] and long["shown"] <= CLIP_CHARS and long["length"] == 50_000
    run = clipped_markdown("<script>" + "A" * 5000)
    assert run["html"].startswith('<pre class="plain-text">&lt;script&gt;AAA')


def test_the_whole_text_is_served_to_its_rater_only(client, users):
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    other = users.create("other", "annotator")
    project = make_project(client, admin, guidelines="G" * 150_000)
    row = {"prompt": "P" * 30_000, "completions": [{"text": "A" * 30_000}, {"text": "short"}]}
    assert import_lines(client, admin, project["id"], (json.dumps(row) + "\n").encode()).status_code == 200
    task = client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"]).json()
    long_option = next(o for o in task["options"] if o["text"].startswith("A"))
    base = f"/projects/{project['id']}/annotate/{task['assignment_id']}/full"
    whole = client.get(f"{base}/option-{long_option['id']}", headers=rater["headers"])
    assert whole.status_code == 200 and whole.text.count("A") >= 30_000
    assert client.get(f"{base}/prompt-0", headers=rater["headers"]).text.count("P") >= 30_000
    for part in ("option-999999", "prompt-7", "nonsense", "option-²"):
        assert client.get(f"{base}/{part}", headers=rater["headers"]).status_code == 404
    assert client.get(f"{base}/option-{long_option['id']}", headers=other["headers"]).status_code == 404
    guidelines = client.get(f"/projects/{project['id']}/guidelines/full", headers=rater["headers"])
    assert guidelines.status_code == 200 and guidelines.text.count("G") >= 150_000
