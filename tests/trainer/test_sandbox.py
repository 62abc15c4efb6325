"""The sandbox contains what it runs: every attack ends in a clear verdict and leaves nothing outside."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import missing
from trainer.rewards.sandbox import Limits, SandboxUnavailable, run_tests

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(cpu_seconds=2, wall_seconds=3.0, memory_mb=256, hide=[str(ROOT)])


def run(code: str, tests: str = "assert True\n", entry_point: str | None = None, **limits) -> dict:
    try:
        return run_tests(code, tests, entry_point, Limits(**(FAST | limits)))
    except SandboxUnavailable as error:
        missing(f"the sandbox cannot isolate code here: {error}")
        raise


def test_a_correct_answer_passes_and_a_wrong_one_names_its_failing_tests():
    good = run("def f(x):\n    return x + 1\n", "assert f(1) == 2\nassert f(2) == 3\n")
    assert good["passed"] and good["reason"] == "passed" and good["n_tests"] == 2
    assert good["isolation"] == "namespaces"
    tests = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(5) == 6\n    assert candidate(0) == 0\n"
    bad = run("def f(x):\n    return x * 2\n", tests, "f")
    assert not bad["passed"] and bad["reason"] == "wrong_answer"
    assert [t["line"] for t in bad["failed_tests"]] == [3]  # candidate(1) == 2 and (0) == 0 pass; (5) == 6 fails
    assert "candidate(5) == 6" in bad["failed_tests"][0]["test"]


def test_an_infinite_loop_is_stopped_as_a_timeout():
    verdict = run("while True:\n    pass\n")
    assert verdict["reason"] == "timeout" and verdict["seconds"] < 10


def test_a_memory_bomb_fails_with_memory():
    verdict = run("x = bytearray(4 * 1024 ** 3)\n")
    assert verdict["reason"] == "memory"


def test_a_fork_bomb_is_capped_and_killed():
    verdict = run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert not verdict["passed"] and verdict["reason"] in ("timeout", "crash", "memory")
    assert verdict["seconds"] < 15


def test_nothing_outside_the_work_dir_can_be_written(tmp_path):
    for target in [ROOT / "sandbox-was-here", tmp_path / "x", Path("/usr/sandbox-was-here")]:
        verdict = run(f"open({str(target)!r}, 'w').write('x')\n")
        assert verdict["reason"] == "crash", verdict
        assert not target.exists()
    # its /tmp is its own (empty, writable, gone with the run): nothing reaches the host's
    target = Path("/tmp/sandbox-was-here")
    verdict = run(f"import os\nassert os.listdir('/tmp') == []\nopen({str(target)!r}, 'w').write('x')\n")
    assert verdict["passed"] and not target.exists(), verdict
    inside = run("open('notes.txt', 'w').write('fine')\n", "assert open('notes.txt').read() == 'fine'\n")
    assert inside["passed"]


def test_the_environment_holds_no_secrets(monkeypatch):
    monkeypatch.setenv("RANKFORGE_DATABASE_URL", "postgresql://user:secret@db/prod")
    verdict = run("import os\n", "import os\nassert not any('secret' in v for v in os.environ.values())\n"
                  "assert 'RANKFORGE_DATABASE_URL' not in os.environ\n")
    assert verdict["passed"], verdict


def test_no_network():
    verdict = run("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n")
    assert verdict["reason"] == "crash" and "unreachable" in verdict["error"].lower()


def test_it_cannot_kill_its_parent_or_see_other_processes():
    code = ("import os, signal\nos.kill(os.getppid() or 1, signal.SIGKILL)\nseen = [p for p in os.listdir('/proc') "
            "if p.isdigit()]\n")
    verdict = run(code, "assert len(seen) <= 2, seen\n")
    assert verdict["passed"], verdict
    assert os.getpid() > 0  # we are still here


def test_huge_output_is_cut_at_the_file_size_limit():
    verdict = run("import sys\nwhile True:\n    sys.stdout.write('x' * 100000)\n", file_size_mb=1)
    assert verdict["reason"] == "output_limit"
    assert len(verdict["output_tail"]) <= 2000


def test_the_project_and_its_dependencies_cannot_be_imported_or_read():
    for module in ("app", "trainer", "sqlalchemy"):
        verdict = run(f"import {module}\n")
        assert verdict["reason"] == "crash" and "ModuleNotFoundError" in verdict["error"], verdict
    verdict = run(f"open({str(ROOT / 'pyproject.toml')!r}).read()\n")
    assert verdict["reason"] == "crash"


def test_syntax_errors_and_missing_functions_are_format_failures():
    assert run("def f(:\n")["reason"] == "format"
    assert run("def g():\n    return 1\n", "def check(candidate):\n    assert candidate() == 1\n", "f")["reason"] == "format"


def test_an_early_exit_is_not_a_pass():
    assert run("import os\nos._exit(0)\n")["reason"] == "crash"
    assert run("raise SystemExit(0)\n")["reason"] == "crash"


def _bootstrap_without_namespaces(allow_unconfined: bool) -> dict:
    """The bootstrap where the OS refuses namespaces (as for a non-root user without user namespaces)."""
    import json
    import subprocess
    import sys
    import tempfile

    import trainer.rewards.sandbox as sandbox
    from trainer.rewards.sandbox import HARNESS, sandbox_python

    workdir = tempfile.mkdtemp()
    task = {"code": "x = 1\n", "tests": "assert x == 1\n", "entry_point": None}
    limits = Limits(allow_unconfined=allow_unconfined).__dict__
    config = {"limits": limits, "python": sandbox_python(), "files": {"harness.py": HARNESS, "task.json": json.dumps(task)}}
    Path(workdir, "config.json").write_text(json.dumps(config))
    script = (f"import sys; sys.path.insert(0, {str(Path(sandbox.__file__).parent)!r}); import sandbox as s\n"
              "def refuse(*args):\n    raise OSError(1, 'unshare: Operation not permitted')\n"
              "s._isolate = refuse\nimport json; print(json.dumps(s.bootstrap(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-I", "-c", script, workdir], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_refused_without_isolation_unless_an_admin_allows_it():
    refused = _bootstrap_without_namespaces(False)
    assert "refusing to run it unconfined" in refused["unavailable"]
    allowed = _bootstrap_without_namespaces(True)
    assert allowed["passed"] and allowed["isolation"] == "unconfined", allowed
