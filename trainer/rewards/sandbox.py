"""The sandbox: run untrusted Python (a completion's code and its tests) contained, and report a verdict.

Standard library only, and runnable as a plain script (`python -I -S sandbox.py --bootstrap DIR`), because the
sandbox's own bootstrap runs under the isolated interpreter. Both sides use it: the app's `verify` job (through
`python -m trainer.rewards.verifier`, a supervised child of the worker) and GRPO/RLOO's "verifier" reward.

    run_tests(code, tests, entry_point=None, limits=Limits()) -> verdict dict
        {"passed", "reason", "failed_tests", "n_tests", "output_tail", "seconds", "isolation"}

Each run, in its own process tree:
- a fresh tmpfs as its working directory (size-limited), holding only the program, the tests and the harness;
- Linux namespaces: a new network namespace (no interface but a downed loopback: no network at all), a new mount
  namespace where every other mount is remounted read-only and the paths in `hide` (the artifact store, the
  project's source) are covered by empty read-only tmpfs, a new PID namespace with its own /proc (the code sees
  no other process and cannot signal the worker; killing its PID 1 ends every process it started), new IPC/UTS;
- its own unprivileged uid and gid (no capabilities, no_new_privs), so RLIMIT_NPROC caps a fork bomb and no file
  of the host is writable;
- resource limits: CPU seconds, address space, processes, open files, file size (which also caps its output),
  no core dumps; a wall-clock timeout after which the whole namespace is killed;
- a clean environment (PATH, HOME and TMPDIR pointing into the work dir, nothing else: no credentials) and the
  interpreter in isolated mode without site-packages (the project and its dependencies are not importable).

The namespaces need root (or unprivileged user namespaces). Where they are not available the run is refused with
SandboxUnavailable and a clear message, unless `allow_unconfined` (env RANKFORGE_SANDBOX_ALLOW_UNCONFINED=1) is
set knowingly: then the code runs with the resource limits, the clean environment and the temp dir only.

Reasons in a verdict: passed, wrong_answer (a test failed), timeout (CPU or wall time), memory, crash (an
exception outside the tests, an early exit, a signal), format (no code, a syntax error, no such function),
output_limit (wrote more than the file-size limit), sandbox_error (the sandbox itself failed).

Limitation: the harness that runs the tests lives in the same interpreter as the code under test, so code written
to defeat the harness (rewriting its result file, patching its functions) can fake a pass; the sandbox guarantees
containment, not an unforgeable verdict. Human audits of verdicts (app.verifiers) are the check on that.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

REASONS = ("passed", "wrong_answer", "timeout", "memory", "crash", "format", "output_limit", "sandbox_error")
ALLOW_UNCONFINED_ENV = "RANKFORGE_SANDBOX_ALLOW_UNCONFINED"
HIDE_ENV = "RANKFORGE_SANDBOX_HIDE"
PYTHON_ENV = "RANKFORGE_SANDBOX_PYTHON"
THIS_FILE = os.path.abspath(__file__)
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(THIS_FILE)))
"""The checkout holding trainer/ (and app/, the default artifact store under var/): hidden from sandboxed code."""

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38


class SandboxUnavailable(RuntimeError):
    """The OS does not allow the isolation the sandbox needs (and unconfined runs were not allowed)."""


@dataclass
class Limits:
    """What one run may use."""

    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_mb: int = 512
    processes: int = 16
    open_files: int = 64
    file_size_mb: int = 4
    disk_mb: int = 32
    output_bytes: int = 2000
    """tail of stdout + stderr kept in the verdict"""
    allow_unconfined: bool = False
    hide: list[str] = field(default_factory=list)
    """host paths covered by an empty read-only tmpfs inside the sandbox (artifact store, project source)"""


# --------------------------------------------------------------------------------------------------------------
# the harness: runs inside the sandbox (stdlib only), writes result.json
# --------------------------------------------------------------------------------------------------------------

HARNESS = r'''
import ast, json, os, sys, traceback
_out = os.open("result.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
def _write(result):
    os.write(_out, json.dumps(result).encode()[:200000]); os.close(_out)
_task = json.load(open("task.json")); os.remove("task.json")
_failures = []
_test_lines = _task["tests"].splitlines()
def __rf_fail(lineno, error):
    text = _test_lines[lineno - 1].strip() if 0 < lineno <= len(_test_lines) else ""
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    _failures.append({"line": lineno, "test": text[:300], "error": message[:300],
                      "memory": isinstance(error, MemoryError)})
class _Wrap(ast.NodeTransformer):
    count = 0
    def visit_Assert(self, node):
        _Wrap.count += 1
        call = ast.Expr(ast.Call(ast.Name("__rf_fail", ast.Load()), [ast.Constant(node.lineno), ast.Name("__rf_e", ast.Load())], []))
        handler = ast.ExceptHandler(ast.Name("Exception", ast.Load()), "__rf_e", [call])
        return ast.Try([node], [handler], [], [])
def _error(reason, error, tb=True):
    detail = "".join(traceback.format_exception(error)[-6:]) if tb else str(error)
    if isinstance(error, MemoryError): reason = "memory"
    if isinstance(error, OSError) and error.errno == 27: reason = "output_limit"
    return {"passed": False, "reason": reason, "failed_tests": [], "n_tests": _Wrap.count, "error": detail[-2000:]}
def _main():
    try:
        solution = compile(_task["code"], "solution.py", "exec")
    except (SyntaxError, ValueError) as error:
        return _error("format", error, tb=False)
    try:
        tree = _Wrap().visit(ast.parse(_task["tests"], "tests.py"))
        tests = compile(ast.fix_missing_locations(tree), "tests.py", "exec")
    except (SyntaxError, ValueError) as error:
        return {"passed": False, "reason": "sandbox_error", "failed_tests": [], "n_tests": 0,
                "error": f"the tests do not compile: {error}"}
    scope = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(solution, scope)
    except BaseException as error:
        return _error("crash", error)
    scope["__rf_fail"] = __rf_fail
    try:
        exec(tests, scope)
        entry = _task.get("entry_point")
        if entry:
            if not callable(scope.get(entry)):
                return {"passed": False, "reason": "format", "failed_tests": [], "n_tests": _Wrap.count,
                        "error": f"the answer defines no function {entry!r}"}
            if callable(scope.get("check")):
                scope["check"](scope[entry])
    except BaseException as error:
        return _error("crash", error)
    failed = [{k: v for k, v in f.items() if k != "memory"} for f in _failures]
    reason = "passed" if not failed else ("memory" if any(f["memory"] for f in _failures) else "wrong_answer")
    return {"passed": not failed, "reason": reason, "failed_tests": failed[:50], "n_tests": _Wrap.count}
_result = _main()
sys.stdout.flush(); sys.stderr.flush()
_write(_result)
os._exit(0)
'''


# --------------------------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------------------------


def _world_executable(path: str) -> bool:
    """Whether a process of another uid can execute `path` (every directory on the way o+x, the file o+x)."""
    path = os.path.realpath(path)
    parts = path.split("/")
    for i in range(2, len(parts) + 1):
        try:
            mode = os.stat("/".join(parts[:i]) or "/").st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def sandbox_python() -> str:
    """An interpreter an unprivileged uid can run: $RANKFORGE_SANDBOX_PYTHON, this one, or the system's."""
    candidates = [os.environ.get(PYTHON_ENV), sys.executable, getattr(sys, "_base_executable", None),
                  shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"]  # fmt: skip
    for candidate in candidates:
        if candidate and os.path.exists(candidate) and _world_executable(candidate):
            return os.path.realpath(candidate)
    return os.path.realpath(sys.executable)


def env_limits(**overrides) -> Limits:
    """Limits with the environment's settings (unconfined permission, paths to hide) and the given overrides."""
    limits = Limits(**overrides)
    if os.environ.get(ALLOW_UNCONFINED_ENV, "").lower() in ("1", "true", "yes"):
        limits.allow_unconfined = True
    defaults = [PROJECT_ROOT, os.environ.get("RANKFORGE_DATA_DIR")]  # the source tree, the artifact store
    extra = os.environ.get(HIDE_ENV, "").split(os.pathsep)
    limits.hide = list(dict.fromkeys(os.path.abspath(p) for p in [*limits.hide, *defaults, *extra] if p))
    return limits


def run_tests(code: str, tests: str, entry_point: str | None = None, limits: Limits | None = None) -> dict:
    """Run `code` and then `tests` (asserts; a `check(candidate)` function called with `entry_point` when given)
    in the sandbox; the verdict dict (see the module docstring). Never raises for anything the code does;
    raises SandboxUnavailable when isolation is impossible and unconfined runs are not allowed."""
    limits = limits or env_limits()
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="rankforge-sandbox-")
    try:
        os.chmod(workdir, 0o700)
        task = {"code": code, "tests": tests, "entry_point": entry_point}
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as handle:
            json.dump({"limits": asdict(limits), "python": sandbox_python(),
                       "files": {"harness.py": HARNESS, "task.json": json.dumps(task)}}, handle)  # fmt: skip
        command = [sandbox_python(), "-I", "-S", "-B", THIS_FILE, "--bootstrap", workdir]
        try:
            child = subprocess.run(command, cwd=workdir, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                   timeout=limits.wall_seconds + 20, start_new_session=True)  # fmt: skip
        except subprocess.TimeoutExpired:
            return _verdict(False, "sandbox_error", error="the sandbox bootstrap did not return", started=started)
        report = None
        for line in reversed(child.stdout.splitlines()):
            with contextlib.suppress(ValueError):
                report = json.loads(line)
                break
        if not isinstance(report, dict):
            return _verdict(False, "sandbox_error", started=started,
                            error=f"bootstrap exited {child.returncode}: {child.stderr[-1500:]}")  # fmt: skip
        if report.get("unavailable"):
            raise SandboxUnavailable(report["unavailable"])
        report["seconds"] = round(time.monotonic() - started, 3)
        return report
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _verdict(passed: bool, reason: str, *, started: float | None = None, **extra) -> dict:
    verdict = {"passed": passed, "reason": reason, "failed_tests": [], "n_tests": 0, "output_tail": ""}
    if started is not None:
        verdict["seconds"] = round(time.monotonic() - started, 3)
    return verdict | extra


# --------------------------------------------------------------------------------------------------------------
# bootstrap: runs as `python -I -S sandbox.py --bootstrap DIR`; prints one JSON verdict line
# --------------------------------------------------------------------------------------------------------------


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(libc, source, target, fstype, flags, data=None) -> None:
    enc = (lambda s: s.encode() if isinstance(s, str) else s)  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, flags to keep) of every mount in this mount namespace, from /proc/self/mountinfo."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            options = fields[5].split(",")
            keep = (MS_NOSUID if "nosuid" in options else 0) | (MS_NODEV if "nodev" in options else 0) | (
                MS_NOEXEC if "noexec" in options else 0
            )
            points.append((point, keep))
    return points


def _sandbox_uid() -> int:
    """An uid of its own for each run (so RLIMIT_NPROC counts only this run's processes); no passwd entry."""
    return 200000 + (os.getpid() % 100000)


def _setup_child(workdir: str, config: dict, isolated: bool, uid: int) -> None:
    """In the fork that becomes the sandboxed program: mounts, limits, identity. Raises on any failure."""
    import resource

    limits = config["limits"]
    if isolated:
        libc = _libc()
        _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        python = os.path.realpath(config["python"])
        for path in limits["hide"]:
            real = os.path.realpath(path)
            if python.startswith(real.rstrip("/") + "/"):  # the interpreter itself lives there: cannot hide it
                continue
            if os.path.isdir(path) and real != "/":
                _mount(libc, "tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=000")
        for point, keep in sorted(_mount_points(), key=lambda p: p[0].count("/")):
            if point == workdir:
                continue
            with contextlib.suppress(OSError):  # a mount hidden under another one cannot be reached: fine
                _mount(libc, None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
        probe = "/.rankforge-sandbox-probe"
        try:
            os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
            os.remove(probe)
            raise OSError("the root file system is still writable after remounting it read-only")
        except OSError as error:
            if "still writable" in str(error):
                raise
    os.chdir(workdir)
    mb = 2**20
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mb, limits["memory_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_mb"] * mb, limits["file_size_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # from root to another uid: every capability is dropped
    _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _isolate(workdir: str, disk_mb: int, uid: int) -> None:
    """New namespaces for this process (mount, network, IPC, UTS; PID for its children) and the work dir as a
    fresh tmpfs owned by the sandbox uid. Raises OSError when the OS refuses."""
    libc = _libc()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if os.getuid() != 0:  # unprivileged: a user namespace where we are root
        outer_uid, outer_gid = os.getuid(), os.getgid()
        _check(libc.unshare(CLONE_NEWUSER | flags), "unshare (user namespace)")
        with open("/proc/self/setgroups", "w") as handle:
            handle.write("deny")
        with open("/proc/self/uid_map", "w") as handle:
            handle.write(f"0 {outer_uid} 1")
        with open("/proc/self/gid_map", "w") as handle:
            handle.write(f"0 {outer_gid} 1")
    else:
        _check(libc.unshare(flags), "unshare")
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE)
    owner = f",uid={uid},gid={uid}" if os.getuid() == 0 else ""
    _mount(libc, "tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_mb}m,mode=0700{owner}")


def _tail(path: str, size: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            length = handle.tell()
            handle.seek(max(0, length - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def bootstrap(workdir: str) -> dict:
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    limits = config["limits"]
    uid = _sandbox_uid()
    isolated = True
    try:
        _isolate(workdir, limits["disk_mb"], uid)
    except OSError as error:
        if not limits["allow_unconfined"]:
            return {"unavailable": f"the sandbox cannot isolate code on this machine ({error}); refusing to run "
                    f"it unconfined (set {ALLOW_UNCONFINED_ENV}=1 to allow that knowingly)"}  # fmt: skip
        isolated = False
    for name, text in config["files"].items():
        with open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    if os.getuid() == 0:
        for name in [*os.listdir(workdir), "."]:
            os.chown(os.path.join(workdir, name), uid, uid)
    out_path, err_path = os.path.join(workdir, "stdout.txt"), os.path.join(workdir, "stderr.txt")
    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # PID 1 of the new PID namespace
        os.close(read_end)
        try:
            if not isolated:
                os.setsid()
            _setup_child(workdir, config, isolated, uid)
            out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.close(write_end)
            env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
                   "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
            os.execve(config["python"], [config["python"], "-I", "-S", "-B", "harness.py"], env)
        except BaseException as error:  # noqa: BLE001 - report any setup failure to the parent, then die
            with contextlib.suppress(OSError):
                os.write(write_end, f"{type(error).__name__}: {error}".encode()[:2000])
        os._exit(111)
    os.close(write_end)
    deadline = started + limits["wall_seconds"]
    timed_out = False
    status = 0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL) if isolated else os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    if not isolated:  # no PID namespace took the rest with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    seconds = time.monotonic() - started
    setup_error = os.read(read_end, 4000).decode("utf-8", "replace")
    os.close(read_end)
    tail = (_tail(out_path, limits["output_bytes"]) + _tail(err_path, limits["output_bytes"]))[-limits["output_bytes"]:]
    base = {"isolation": "namespaces" if isolated else "unconfined", "output_tail": tail, "run_seconds": round(seconds, 3)}
    if setup_error:
        return _verdict(False, "sandbox_error", error=f"sandbox setup failed: {setup_error}") | base
    if timed_out:
        return _verdict(False, "timeout", error=f"ran past the wall-clock limit of {limits['wall_seconds']} s") | base
    result = None
    with contextlib.suppress(OSError, ValueError), open(os.path.join(workdir, "result.json"), encoding="utf-8") as f:
        result = json.loads(f.read(300000))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL) and seconds >= limits["cpu_seconds"] * 0.9:
            return _verdict(False, "timeout", error=f"used up its {limits['cpu_seconds']} s of CPU") | base
        if sig == signal.SIGXFSZ:
            return _verdict(False, "output_limit", error="wrote past the file-size limit") | base
        return _verdict(False, "crash", error=f"killed by signal {signal.Signals(sig).name}") | base
    if not isinstance(result, dict):
        code = os.WEXITSTATUS(status)
        return _verdict(False, "crash", error=f"exited with code {code} before the tests finished") | base
    return _verdict(bool(result.get("passed")), str(result.get("reason", "crash"))) | result | base


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bootstrap":
        print(json.dumps(bootstrap(sys.argv[2])), flush=True)
    elif len(sys.argv) >= 3:  # python -m trainer.rewards.sandbox CODE_FILE TESTS_FILE [ENTRY_POINT]
        with open(sys.argv[1], encoding="utf-8") as code_file, open(sys.argv[2], encoding="utf-8") as tests_file:
            code_text, tests_text = code_file.read(), tests_file.read()
        print(json.dumps(run_tests(code_text, tests_text, sys.argv[3] if len(sys.argv) > 3 else None)))
    else:
        sys.exit("usage: python -m trainer.rewards.sandbox CODE_FILE TESTS_FILE [ENTRY_POINT]")
