"""Hostile answers through the verifier: code under test reaches nothing of the host (issue 21).

Each hostile answer defines `attack()`, which tries one escape and returns "escaped" only when it worked; the
prompt's tests are `assert candidate() == "escaped"`, so a passing verdict is an escape. Attacks on processes are
judged by survival too: the sandbox's bootstrap must return its verdict (no sandbox_error), the verify job must
succeed (the worker and its verifier child alive) and a sentinel process outside must live. A control answer returns
"escaped" without attacking and must pass (the probes ran at all). The planted targets are world-readable (or
world-writable) on the host, so only the sandbox stands between them and the code.

The first half runs a real `verify` job in this worker process (as this test's user: root in CI); the second runs
the job's verifier child (`python -m trainer.rewards.verifier`, the same command the job runs) as an unprivileged
user, where the sandbox relies on user namespaces.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from app.worker import run_one
from tests.conftest import ROOT, missing, use_database
from tests.helpers import import_lines, make_project
from trainer.rewards.sandbox import Limits, SandboxUnavailable, run_tests, sandbox_python

SECRET = f"planted-{uuid.uuid4().hex}"
TESTS = {"code": "def check(candidate):\n    assert candidate() == 'escaped'\n", "entry_point": "attack"}
UNPRIVILEGED_USER = "nobody"

PROBES = {
    "postgresql_socket": """
import socket
def attack():
    for path in {pg_sockets!r}:
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(2)
        client.connect(path)  # raises unless the socket is reachable
        client.sendall(b"\\x00\\x00\\x00\\x08\\x04\\xd2\\x16\\x2f")  # SSLRequest: the server answers one byte
        if client.recv(1):
            return "escaped"
""",
    "mariadb_socket": """
import socket
def attack():
    for path in {mariadb_sockets!r}:
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(2)
        client.connect(path)
        if client.recv(4):  # the server speaks first: its handshake
            return "escaped"
""",
    "list_run_dir": """
import os
def attack():
    if any(os.listdir(path) for path in {socket_dirs!r}):
        return "escaped"
""",
    "read_host_tmp_file": """
def attack():
    if open({host_file!r}).read() == {secret!r}:
        return "escaped"
""",
    "read_project_file": """
def attack():
    if open({project_file!r}).read() == {secret!r}:
        return "escaped"
""",
    "read_data_dir_file": """
def attack():
    if open({data_file!r}).read() == {secret!r}:
        return "escaped"
""",
    "write_outside_scratch": """
def attack():
    for path in {write_targets!r}:
        try:
            with open(path, "w") as handle:
                handle.write("written from the sandbox")
            return "escaped"
        except OSError:
            pass
""",
    "tcp_to_postgresql": """
import socket
def attack():
    socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    return "escaped"
""",
    "fork_bomb": """
import os, time
def attack():
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
    return "escaped"
""",
    "memory_bomb": """
def attack():
    hog = bytearray(2 * 1024 ** 3)
    hog[:: 4096] = b"x" * len(hog[:: 4096])
    return "escaped"
""",
    "kill_parent": """
import os, signal
def attack():  # judged by survival: a killed bootstrap gives sandbox_error, a killed verifier fails the job
    for kill in (lambda: os.kill(os.getppid(), signal.SIGKILL),  # getppid() is 0 (outside): our process group
                 lambda: os.killpg(os.getpgrp(), signal.SIGKILL), lambda: os.kill(-1, signal.SIGKILL)):
        try:
            kill()
        except OSError:
            pass
""",
    "kill_a_host_process": """
import os, signal
def attack():
    os.kill({sentinel_pid}, signal.SIGKILL)
    return "escaped"
""",
    "privileges": """
def attack():
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    if int(status["CapEff"], 16) or int(status["CapBnd"], 16) or status["NoNewPrivs"].strip() != "1":
        return "escaped"
""",
}
CONTROL = "def attack():\n    return 'escaped'\n"


def _planted(path: Path, mode: int = 0o644) -> Path:
    path.write_text(SECRET)
    path.chmod(mode)
    return path


@pytest.fixture
def targets(tmp_path_factory):
    """World-readable files in the host's /tmp, the project tree and the data dir, a world-writable directory, the
    database sockets on this machine, and a sentinel process outside the sandbox."""
    pg_sockets = sorted(glob.glob("/var/run/postgresql/.s.PGSQL.*[0-9]") + glob.glob("/tmp/.s.PGSQL.*[0-9]"))
    if not pg_sockets:
        missing("no PostgreSQL Unix socket on this machine (the probe needs one to attack)")
    mariadb_sockets = sorted(p for p in ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock",
                                         "/var/lib/mysql/mysql.sock") if os.path.exists(p))  # fmt: skip
    host_dir = Path(tempfile.mkdtemp(prefix="rankforge-probe-"))
    host_dir.chmod(0o777)
    data_dir = Path(tempfile.mkdtemp(prefix="rankforge-probe-data-"))  # an ordinary 0755 dir, as /var/lib/...
    data_dir.chmod(0o755)
    project_file = _planted(ROOT / f".sandbox-probe-{uuid.uuid4().hex}")
    written = [host_dir / "written", ROOT / f".sandbox-probe-written-{uuid.uuid4().hex}", data_dir / "written"]
    sentinel = subprocess.Popen(["sleep", "300"], start_new_session=True)
    values = {"pg_sockets": pg_sockets, "mariadb_sockets": mariadb_sockets or pg_sockets,
              "socket_dirs": sorted({os.path.dirname(p) for p in pg_sockets + mariadb_sockets}),
              "host_file": str(_planted(host_dir / "token")), "project_file": str(project_file),
              "data_file": str(_planted(data_dir / "secret")), "write_targets": [str(p) for p in written],
              "secret": SECRET, "sentinel_pid": sentinel.pid}  # fmt: skip
    try:
        yield {"values": values, "data_dir": data_dir, "written": written, "sentinel": sentinel}
    finally:
        sentinel.kill()
        sentinel.wait()
        for path in [project_file, *written]:
            path.unlink(missing_ok=True)
        shutil.rmtree(host_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


def answers(values: dict) -> dict[str, str]:
    return {name: code.format(**values).lstrip() for name, code in PROBES.items()} | {"control": CONTROL}


def assert_contained(verdicts: dict[str, dict], targets: dict) -> None:
    """Every attack failed (and the sandbox itself worked), the control passed, nothing was written, the sentinel
    lives."""
    assert set(verdicts) == set(PROBES) | {"control"}
    assert verdicts["control"]["passed"], verdicts["control"]
    escaped = {name: v for name, v in verdicts.items() if name != "control" and v["passed"]}
    assert not escaped, f"escaped: {sorted(escaped)}"
    broken = {name: v for name, v in verdicts.items() if v["reason"] == "sandbox_error"}
    assert not broken, f"the sandbox failed (a killed or broken bootstrap): {broken}"
    assert [p for p in targets["written"] if p.exists()] == []
    assert targets["sentinel"].poll() is None


@pytest.fixture(scope="module")
def sandbox_works():
    try:
        run_tests("x = 1\n", "assert x == 1\n", None, Limits())
    except SandboxUnavailable as error:
        missing(f"the sandbox cannot isolate code here: {error}")


def test_hostile_answers_in_a_verify_job_reach_nothing(client, users, db_url, targets, sandbox_works):
    use_database(db_url, targets["data_dir"])  # the artifact store in an ordinary world-readable directory
    admin = users.create("root", "admin")
    engineer = users.create("eve", "engineer")
    project = make_project(client, admin, name="Probes", slug="probes")
    texts = answers(targets["values"])
    rows = [{"prompt": f"Probe {name}", "external_id": name, "tests": TESTS, "completions": [{"text": text, "model": "m"}]}
            for name, text in texts.items()]  # fmt: skip
    response = import_lines(client, admin, project["id"], "\n".join(json.dumps(r) for r in rows).encode())
    assert response.status_code == 200, response.text
    job = client.post("/api/v1/jobs", json={"kind": "verify", "project_id": project["id"], "params": {"workers": 2}},
                      headers=engineer["headers"]).json()  # fmt: skip
    assert run_one("w1") == job["id"]
    done = client.get(f"/api/v1/jobs/{job['id']}", headers=engineer["headers"]).json()
    assert done["status"] == "succeeded", done  # the worker and the verifier child survived every probe
    listed = client.get(f"/api/v1/projects/{project['id']}/verdicts", params={"job_id": job["id"]},
                        headers=engineer["headers"]).json()["verdicts"]  # fmt: skip
    by_text = {text: name for name, text in texts.items()}
    assert_contained({by_text[v["answer"]]: v for v in listed}, targets)


def _unprivileged_ids() -> tuple[int, int] | None:
    """(uid, gid) to run the verifier child as: an unprivileged user when this test runs as root, else None."""
    if os.getuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        missing(f"no user {UNPRIVILEGED_USER!r} to run the verifier as")
    return entry.pw_uid, entry.pw_gid


def test_hostile_answers_reach_nothing_when_the_verifier_runs_unprivileged(tmp_path, targets, monkeypatch):
    ids = _unprivileged_ids()
    as_user = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
    python = sandbox_python()
    userns = subprocess.run([python, "-I", "-c", "import ctypes, sys; sys.exit(ctypes.CDLL(None).unshare(0x10000000))"],
                            capture_output=True, **as_user)  # fmt: skip
    if userns.returncode != 0:
        missing("unprivileged user namespaces are not available here (sysctl user.max_user_namespaces, "
                "kernel.unprivileged_userns_clone): the sandbox refuses to run unprivileged")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="rankforge-probe-verifier-"))
    try:
        work.chmod(0o755)
        package = work / "trainer"  # a copy the unprivileged user can read (the checkout may not be readable)
        shutil.copytree(ROOT / "trainer" / "rewards", package / "rewards", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "trainer" / "__init__.py", package / "__init__.py")
        for path in [package, *package.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        texts = answers(targets["values"])
        tasks, verdicts_path = work / "tasks.jsonl", work / "out" / "verdicts.jsonl"
        tasks.write_text("".join(json.dumps({"id": i, "text": text, "reference": None, "tests": TESTS}) + "\n"
                                 for i, text in enumerate(texts.values())))  # fmt: skip
        verdicts_path.parent.mkdir()
        if ids:
            os.chown(verdicts_path.parent, *ids)
        monkeypatch.setenv("RANKFORGE_DATA_DIR", str(targets["data_dir"]))
        from app.config import get_settings
        from app.verifiers.handlers import sandbox_env

        get_settings.cache_clear()
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(work), "LANG": "C.UTF-8"} | sandbox_env()
        child = subprocess.run([python, "-m", "trainer.rewards.verifier", str(tasks), str(verdicts_path), "--workers=2"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=300, **as_user)  # fmt: skip
        assert child.returncode == 0, child.stdout + child.stderr  # the job's child survived every probe
        names = list(texts)
        rows = [json.loads(line) for line in verdicts_path.read_text().splitlines()]
        assert_contained({names[row["id"]]: row["verdict"] for row in rows}, targets)
    finally:
        get_settings.cache_clear()
        shutil.rmtree(work, ignore_errors=True)


def _run_unconfined(code: str) -> dict:
    """The sandbox's bootstrap where the OS refuses namespaces and unconfined runs are allowed (limits only)."""
    from dataclasses import asdict

    import trainer.rewards.sandbox as sandbox

    work = Path(tempfile.mkdtemp(prefix="rankforge-probe-unconfined-"))
    try:
        task = {"code": code, "tests": TESTS["code"], "entry_point": TESTS["entry_point"]}
        config = {"limits": asdict(sandbox.Limits(allow_unconfined=True)), "python": sandbox_python(),
                  "files": {"harness.py": sandbox.HARNESS, "task.json": json.dumps(task)}}  # fmt: skip
        (work / "config.json").write_text(json.dumps(config))
        script = (f"import sys; sys.path.insert(0, {str(Path(sandbox.__file__).parent)!r}); import sandbox as s\n"
                  "def refuse(*args):\n    raise OSError(1, 'unshare refused by this test')\n"
                  "s._isolate = refuse\nimport json; print(json.dumps(s.bootstrap(sys.argv[1])))")  # fmt: skip
        out = subprocess.run([sandbox_python(), "-I", "-c", script, str(work)], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_probes_are_real_attacks(targets):
    """Without the namespaces (limits only), the probes of the host's files and of the database socket succeed:
    a failed verdict in the tests above is the sandbox's doing, not a broken probe."""
    texts = answers(targets["values"])
    for name in ("read_host_tmp_file", "list_run_dir", "postgresql_socket", "control"):
        verdict = _run_unconfined(texts[name])
        assert verdict["passed"] and verdict["isolation"] == "unconfined", (name, verdict)


def test_the_root_holds_only_what_the_interpreter_needs(sandbox_works):
    """Seen from inside: the interpreter's directories (read-only), a generated /etc, the safe devices, empty /tmp
    and /dev/shm of its own, the work dir; a hidden path under a bound directory shows nothing."""
    code = "import os\nroot = sorted(os.listdir('/'))\netc = sorted(os.listdir('/etc'))\ndev = sorted(os.listdir('/dev'))\n"
    tests = ("assert set(root) <= {'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'usr', 'etc', 'dev', 'proc', "
             "'tmp', 'work'}, root\n"
             "assert set(etc) <= {'passwd', 'group', 'hosts', 'ld.so.cache', 'localtime'}, etc\n"
             "assert dev == ['fd', 'full', 'null', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'urandom', 'zero'], dev\n"
             "assert os.listdir('/tmp') == [] and os.listdir('/dev/shm') == []\n"
             "assert os.getcwd() == '/work' and os.environ['HOME'] == '/work' and os.environ['TMPDIR'] == '/tmp'\n"
             "assert os.path.isdir('/usr/share') and not os.path.exists('/usr/share/zoneinfo')\n"
             "import errno\n"
             "for path in ['/x', '/usr/x', '/etc/x', '/dev/x']:\n"
             "    try:\n        open(path, 'w')\n        assert False, path\n"
             "    except OSError as error:\n        assert error.errno == errno.EROFS, (path, error)\n"
             "open('/tmp/x', 'w').write('x')\nopen('/dev/shm/x', 'w').write('x')\nopen('/dev/null', 'w').write('x')\n")  # fmt: skip
    verdict = run_tests(code, tests, None, Limits(hide=["/usr/share"]))
    assert verdict["passed"] and verdict["n_tests"] == 8, verdict
