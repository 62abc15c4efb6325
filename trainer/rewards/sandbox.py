"""The sandbox: run untrusted Python (a completion's code and its tests) contained, and report a verdict.

Standard library only, and runnable as a plain script (`python -I -S sandbox.py --bootstrap DIR`), because the
sandbox's own bootstrap runs under the isolated interpreter. Both sides use it: the app's `verify` job (through
`python -m trainer.rewards.verifier`, a supervised child of the worker) and GRPO/RLOO's "verifier" reward.

    run_tests(code, tests, entry_point=None, limits=Limits()) -> verdict dict
        {"passed", "reason", "failed_tests", "n_tests", "output_tail", "seconds", "isolation"}

Each run, in its own process tree:
- Linux namespaces: a new network namespace (no interface but a downed loopback: no network, and no abstract Unix
  socket of the host), a new PID namespace with its own /proc (the code sees no other process and cannot signal
  the worker; killing its PID 1 ends every process it started), new IPC/UTS, and a mount namespace holding a
  minimal root of its own (pivot_root, the host's tree detached): read-only binds of /usr (/bin, /lib... as on the
  host) and of the interpreter's prefix, a generated /etc (passwd, group, hosts; the loader cache and time zone
  bound), the safe devices (null, zero, full, random, urandom), its own empty size-limited /tmp and /dev/shm, and
  the run's size-limited tmpfs at /work (its working directory: the program, the tests, the harness). Nothing else
  of the host exists there: no /run or /var/run (database sockets), no home directory, no project tree, no data
  dir; paths in `hide` that a bound directory would still show (the artifact store, the project's source) are
  covered by empty read-only tmpfs;
- no privileges: as root, its own unprivileged uid and gid per run (so RLIMIT_NPROC caps a fork bomb); as an
  unprivileged user, a user namespace mapping only that user (RLIMIT_NPROC then counts per namespace); in both, an
  empty capability bounding set, root made powerless (securebits) and no_new_privs;
- resource limits: CPU seconds, address space, processes, open files, file size (which also caps its output),
  no core dumps; a wall-clock timeout after which the whole namespace is killed; its own session (kill(0, ...)
  reaches only itself) and death with its parent;
- a clean environment (PATH, HOME=/work, TMPDIR=/tmp, nothing else: no credentials) and the interpreter in isolated
  mode without site-packages (the project and its dependencies are not importable).

Root, or unprivileged user namespaces (sysctl user.max_user_namespaces > 0), are needed. Where they are not
available the run is refused with SandboxUnavailable and a clear message, unless `allow_unconfined` (env
RANKFORGE_SANDBOX_ALLOW_UNCONFINED=1) is set knowingly: then the code runs with the resource limits, the clean
environment and the temp dir only.

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

ROOT_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""The top-level host directories the interpreter needs (bound read-only, or recreated where they are symlinks)."""
ETC_FILES = ("ld.so.cache", "localtime")
"""The only host files of /etc the sandbox sees (the dynamic loader's cache, the time zone)."""
DEVICES = ("null", "zero", "full", "random", "urandom")
SCRATCH = "/work"
"""The code's working directory (and HOME) inside the sandbox: the run's size-limited tmpfs, the only writable
place besides its own empty /tmp and /dev/shm."""
PIVOT_ROOT_SYSCALL = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41, "ppc64le": 203, "ppc64": 203,
                      "s390x": 217, "i686": 217, "i386": 217, "armv7l": 218, "armv8l": 218}  # fmt: skip
MNT_DETACH = 2
ST_RELATIME, MS_RELATIME = 4096, 1 << 21
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 1, 24, 28, 47, 4
SECBIT_NOROOT, SECBIT_NOROOT_LOCKED, SECBIT_KEEP_CAPS_LOCKED = 1, 2, 32
SECBIT_NO_CAP_AMBIENT_RAISE, SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 64, 128
LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(libc, source, target, fstype, flags, data=None) -> None:
    enc = (lambda s: s.encode() if isinstance(s, str) else s)  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _mount_points() -> list[str]:
    """Every mount point in this mount namespace, from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return [line.split()[4].encode().decode("unicode_escape") for line in handle]


def _locked_flags(path: str) -> int:
    """The mount flags of `path` that a remount must keep (a user namespace may not clear them)."""
    flags = os.statvfs(path).f_flag
    kept = flags & (os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME)
    return kept | (MS_RELATIME if flags & ST_RELATIME else 0)


def _bind(libc, source: str, target: str, *, writable: bool = False, devices: bool = False) -> None:
    """Bind the host's `source` (a directory or a file, with the mounts under it) on `target`, every one of those
    mounts read-only unless `writable`, nosuid, and nodev unless `devices`."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
    _mount(libc, source, target, None, MS_BIND | MS_REC)
    points = [target]
    if os.path.isdir(source):  # the mounts under a directory came along (MS_REC): each one read-only too
        points += [p for p in _mount_points() if p.startswith(target.rstrip("/") + "/")]
    for point in sorted(set(points), key=lambda p: p.count("/")):
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | _locked_flags(point)
        flags |= (0 if writable else MS_RDONLY) | (0 if devices else MS_NODEV)
        _mount(libc, None, point, None, flags)


def _symlink_like(host: str, target: str) -> bool:
    """Recreate the host's symlink `host` at `target` (merged /usr: /bin -> usr/bin); False when it is no link."""
    if not os.path.islink(host):
        return False
    os.symlink(os.readlink(host), target)
    return True


def _build_root(libc, root: str, scratch: str, config: dict, uid: int) -> None:
    """A minimal root file system on `root`: the interpreter's directories read-only, a few files of /etc, the
    safe devices, a fresh /proc, empty /tmp and /dev/shm, the scratch dir at /work; then pivot into it and detach
    the host's tree, so no other host path (sockets in /run, home directories, the project, the data dir) exists."""
    limits = config["limits"]
    tmpfs_flags = MS_NOSUID | MS_NODEV
    _mount(libc, "tmpfs", root, "tmpfs", tmpfs_flags, "size=1m,mode=0755")
    bound: list[str] = []
    for name in ROOT_DIRS:
        host = "/" + name
        if not _symlink_like(host, os.path.join(root, name)) and os.path.isdir(host):
            _bind(libc, host, os.path.join(root, name))
            bound.append(os.path.realpath(host))
    for path in config["interpreter_paths"]:  # a Python outside /usr (pyenv, a venv's base): its prefix only
        real = os.path.realpath(path)
        if real != "/" and os.path.isdir(real) and not any(real == b or real.startswith(b + "/") for b in bound):
            _bind(libc, real, root + real)
            bound.append(real)
    etc = os.path.join(root, "etc")
    os.mkdir(etc)
    with open(os.path.join(etc, "passwd"), "w", encoding="utf-8") as handle:
        handle.write(f"sandbox:x:{uid}:{uid}:sandbox:{SCRATCH}:/usr/sbin/nologin\n")
    with open(os.path.join(etc, "group"), "w", encoding="utf-8") as handle:
        handle.write(f"sandbox:x:{uid}:\n")
    with open(os.path.join(etc, "hosts"), "w", encoding="utf-8") as handle:
        handle.write("127.0.0.1 localhost\n::1 localhost\n")
    for name in ETC_FILES:
        host = os.path.join("/etc", name)
        if not _symlink_like(host, os.path.join(etc, name)) and os.path.isfile(host):
            _bind(libc, host, os.path.join(etc, name))
    dev = os.path.join(root, "dev")
    os.mkdir(dev)
    for name in DEVICES:
        if os.path.exists(os.path.join("/dev", name)):
            _bind(libc, os.path.join("/dev", name), os.path.join(dev, name), writable=True, devices=True)
    for name, link in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                       ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(link, os.path.join(dev, name))
    for path, mode in ((os.path.join(dev, "shm"), "1777"), (os.path.join(root, "tmp"), "1777")):
        os.mkdir(path)
        _mount(libc, "tmpfs", path, "tmpfs", tmpfs_flags, f"size={limits['disk_mb']}m,mode={mode}")
    os.mkdir(os.path.join(root, "proc"))  # mounted while the host's /proc is still visible (a user namespace
    with contextlib.suppress(OSError):  # needs that); refused (a container masking parts of /proc): no /proc
        _mount(libc, "proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _bind(libc, scratch, root + SCRATCH, writable=True)
    python = os.path.realpath(config["python"])
    for path in limits["hide"]:  # host paths that a bound directory would still show (artifact store, source)
        real = os.path.realpath(path)
        shown = any(real == b or real.startswith(b + "/") for b in bound) and os.path.isdir(root + real)
        if shown and not python.startswith(real.rstrip("/") + "/"):
            _mount(libc, "tmpfs", root + real, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=000")
    machine = os.uname().machine
    if machine not in PIVOT_ROOT_SYSCALL:
        raise OSError(f"pivot_root: unknown system call number on {machine}")
    os.chdir(root)
    _check(libc.syscall(PIVOT_ROOT_SYSCALL[machine], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "detach the host's root")  # the old root was stacked on the new one
    os.chdir("/")
    _mount(libc, None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | tmpfs_flags)
    for probe in ("/.rankforge-sandbox-probe", "/usr/.rankforge-sandbox-probe"):
        try:
            os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError:
            continue
        os.remove(probe)
        raise OSError(f"{os.path.dirname(probe)} is still writable in the sandbox's root")


def _drop_privileges(libc, privileged: bool, namespaced: bool, uid: int, last_cap: int) -> None:
    """No capability now or after exec (an empty bounding set, root no longer special), the sandbox's own uid when
    started as root, and no_new_privs (no setuid program or file capability can give any back)."""
    if privileged or namespaced:  # both hold CAP_SETPCAP here (root, or root of the new user namespace)
        for cap in range(last_cap + 1):
            _check(libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0), "drop a capability")
        bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE
        _check(libc.prctl(PR_SET_SECUREBITS, ctypes.c_ulong(bits | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED), 0, 0, 0),
               "securebits")  # fmt: skip
    if privileged:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # from root to another uid: every capability is dropped
    _check(libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0), "ambient capabilities")
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    _check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")  # effective, permitted, inheritable: none
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _sandbox_uid() -> int:
    """An uid of its own for each run (so RLIMIT_NPROC counts only this run's processes); no passwd entry."""
    return 200000 + (os.getpid() % 100000)


def _setup_child(workdir: str, config: dict, isolated: bool, privileged: bool, uid: int) -> str:
    """In the fork that becomes the sandboxed program: its own session, the minimal root, limits, identity.
    Returns the working directory to run in. Raises on any failure."""
    import resource

    limits = config["limits"]
    libc = _libc()
    os.setsid()  # its own process group: kill(0, ...) reaches no process of the worker's
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:  # the host's /proc, while we see it
        last_cap = int(handle.read())
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent-death signal")
    if isolated:
        _check(libc.unshare(CLONE_NEWNS), "unshare (mount namespace of the program)")  # pivot_root moves only us
        _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE)
        _build_root(libc, os.path.join(workdir, "root"), os.path.join(workdir, "work"), config, uid)
        cwd = SCRATCH
    else:
        cwd = workdir
    os.chdir(cwd)
    mb = 2**20
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mb, limits["memory_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_mb"] * mb, limits["file_size_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    _drop_privileges(libc, privileged, isolated, uid, last_cap)
    return cwd


def _isolate(workdir: str, disk_mb: int, privileged: bool) -> None:
    """New namespaces for this process (user when not root, mount, network, IPC, UTS; PID for its children) and
    the work dir as a fresh size-limited tmpfs, private to them. Raises OSError when the OS refuses."""
    libc = _libc()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if not privileged:  # unprivileged: a user namespace where we are root (mapped to our own uid, nothing else)
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
    _mount(libc, "tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_mb}m,mode=0700")


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
    config["interpreter_paths"] = [sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(config["python"]))]
    privileged = os.getuid() == 0
    uid = _sandbox_uid() if privileged else 0  # unprivileged: root of its user namespace, without capabilities
    isolated = True
    try:
        _isolate(workdir, limits["disk_mb"], privileged)
    except OSError as error:
        if not limits["allow_unconfined"]:
            return {"unavailable": f"the sandbox cannot isolate code on this machine ({error}); refusing to run "
                    f"it unconfined (set {ALLOW_UNCONFINED_ENV}=1 to allow that knowingly)"}  # fmt: skip
        isolated = False
    scratch = os.path.join(workdir, "work") if isolated else workdir
    if isolated:
        os.mkdir(scratch, 0o700)
        os.mkdir(os.path.join(workdir, "root"), 0o700)
    for name, text in config["files"].items():
        with open(os.path.join(scratch, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    if privileged:
        for name in [*os.listdir(scratch), "."]:
            os.chown(os.path.join(scratch, name), uid, uid)
    out_path, err_path = os.path.join(scratch, "stdout.txt"), os.path.join(scratch, "stderr.txt")
    read_end, write_end = os.pipe()  # close-on-exec: a setup failure (exec included) is written here
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # PID 1 of the new PID namespace
        os.close(read_end)
        try:
            cwd = _setup_child(workdir, config, isolated, privileged, uid)
            out = os.open("stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            err = os.open("stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            env = {"PATH": "/usr/bin:/bin", "HOME": cwd, "TMPDIR": "/tmp" if isolated else cwd, "LANG": "C.UTF-8",
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
    with contextlib.suppress(OSError, ValueError), open(os.path.join(scratch, "result.json"), encoding="utf-8") as f:
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
