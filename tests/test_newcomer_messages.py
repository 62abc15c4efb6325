"""Messages that say what to do and page helpers a newcomer relies on (issue 27): the project navigation by role, the
job log from a line boundary, garbled completions, the import format suggestion, the webhook DNS message, and
`rankforge demo` on a busy port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from app.imports.pages import grouped_errors
from app.imports.parsers import LineError, detect_formats
from app.jobs.pages import log_from_line
from app.web import garbled, project_nav
from tests.conftest import ROOT, free_port


def _labels(role: str, path: str = "/projects/demo/train") -> list[str]:
    user = SimpleNamespace(role=role)
    return [link["label"] for link in project_nav(user, SimpleNamespace(id=1, slug="demo"), path)]


def test_the_project_navigation_shows_each_role_its_pages_by_slug():
    assert _labels("annotator") == ["Rate", "Steps", "Battle", "AI review", "Verifier"]
    assert "Members" not in _labels("engineer") and "Train" in _labels("engineer")
    assert _labels("admin")[-1] == "Members" and len(_labels("admin")) == 15
    user = SimpleNamespace(role="admin")
    links = project_nav(user, SimpleNamespace(id=1, slug="demo"), "/projects/1/train")
    assert [link["label"] for link in links if link["current"]] == ["Train"]  # the page named by id or by slug
    assert all(link["href"].startswith("/projects/demo") for link in links)
    on_a_job = project_nav(user, {"id": 1, "slug": "demo"}, "/jobs/4")
    assert on_a_job and not any(link["current"] for link in on_a_job)
    assert project_nav(None, SimpleNamespace(id=1, slug="demo"), "/projects/demo") == []


def test_the_job_log_starts_at_a_line_boundary():
    lines = [f"step {i}: loss 0.{i:04d}" for i in range(1000)]
    text = "\n".join(lines) + "\n"
    shown = log_from_line(text, limit=500)
    assert len(shown) <= 500 and shown.startswith("step ") and shown.endswith("\n")
    assert shown.splitlines()[0] in lines  # a whole line, never the tail of a cut one
    assert log_from_line("short log\nsecond line\n") == "short log\nsecond line\n"  # nothing cut: all of it
    assert log_from_line("") == ""


def test_garbled_completions_are_recognised_and_ordinary_text_is_not():
    assert garbled("oadach fix aut\ufffd\ufffd I af Thvevevelock conam\ufffd thanil You allow\ufffd its")
    assert garbled("\x01\x02\x03abc")
    assert not garbled("17 × 24 = **408**.\n\nWorking: 17 × 20 = 340 and 17 × 4 = 68.")
    assert not garbled("Ünïcödé, 中文, emoji 🙂 and tabs\tare fine")
    assert not garbled("   \n")


def test_a_wrong_import_format_gets_a_suggestion_and_one_entry_per_message():
    trees = [{"message_tree_id": f"t{i}", "prompt": {"message_id": f"p{i}", "role": "prompter", "text": "2+2?",
              "replies": [{"message_id": f"a{i}", "role": "assistant", "text": "4", "rank": 0},
                          {"message_id": f"b{i}", "role": "assistant", "text": "5", "rank": 1}]}} for i in range(50)]  # fmt: skip
    data = ("\n".join(json.dumps(tree) for tree in trees) + "\n").encode()  # an Open-Assistant export
    assert detect_formats(data, "native") == ["oasst"]
    assert detect_formats(b"not json at all\n", "native") == []
    trl = json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}).encode()
    assert "trl" in detect_formats(trl, "native")
    grouped = grouped_errors([LineError(i, "missing 'completions'") for i in range(1, 101)] + [LineError(0, "x")])
    assert grouped == [{"lines": list(range(1, 101)), "message": "missing 'completions'"}, {"lines": [0], "message": "x"}]


def test_a_webhook_host_that_does_not_resolve_gets_a_readable_message():
    from app.webhooks.service import UnsafeWebhookUrl, resolve_checked

    with pytest.raises(UnsafeWebhookUrl) as caught:
        resolve_checked("https://no-such-host.invalid/hook")
    message = str(caught.value.detail)
    assert "no-such-host.invalid" in message and "does not resolve" in message and "Errno" not in message


def test_the_demo_on_a_busy_port_says_so_at_once_and_how_to_pick_another(tmp_path):
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        env = os.environ | {"RANKFORGE_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
                            "RANKFORGE_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--port", str(port), "--empty", "--no-worker"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"Port {port}" in done.stderr and f"--port {port + 1}" in done.stderr
    assert "running" not in done.stdout  # it never claimed to run
    assert not (tmp_path / "demo.db").exists()  # and failed before building anything


def test_a_garbled_answer_is_marked_where_staff_read_comparisons(client, users):
    from tests.auth.test_auth import login
    from tests.helpers import import_lines, make_project

    admin = users.create("admin", "admin")
    project = make_project(client, admin, slug="garble")
    row = {"prompt": "Say hi", "completions": [{"text": "Hi there!"}, {"text": "oad\ufffd\ufffd fix \x01\x02 aut\ufffd"}],
           "ranking": [[0], [1]]}  # fmt: skip
    import_lines(client, admin, project["id"], (json.dumps(row) + "\n").encode(), gold=True)
    assert login(client, "admin", "secret-pass-1").status_code == 303
    practice = client.get("/projects/garble/practice", headers={"Accept": "text/html"}).text
    assert practice.count(">garbled</span>") == 1  # the byte soup, not the greeting
    assert "expected-ranking\">A &gt; B<" in practice
