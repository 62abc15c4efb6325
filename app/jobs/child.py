"""Child processes of jobs: start one in its own process group, read its JSON-lines events, end it on cancel.

Used by every job kind that runs a child (training, the registry's tiny-model builder), so none of them imports
torch into the worker. The child:
- runs in a new session (process group) so cancel ends it and everything it spawned: SIGTERM, then SIGKILL
  after a grace period;
- gets SIGKILL from the kernel when the worker dies (PR_SET_PDEATHSIG), so a retried job never races an orphan;
- reports on stdout, one JSON object a line (trainer.progress): progress, metrics, log, done, error. Other
  stdout lines are kept as log; stderr's tail is logged and quoted when the child fails.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.config import get_settings
from app.errors import JobCancelled, JobFailed
from trainer.threads import THREADS_ENV, TOKEN_CACHE_ENV

ROOT = Path(__file__).resolve().parents[2]
CANCEL_GRACE_SECONDS = 5.0
PROGRESS_EVERY_SECONDS = 0.5
LOG_EVERY_SECONDS = 2.0


def python_executable() -> str:
    return get_settings().python_executable or sys.executable


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment for a child, plus: the trainer's thread setting when one is configured (else
    the child sizes its threads from the CPUs it may use: trainer.threads) and the tokenization cache's
    directory in the artifact store."""
    settings = get_settings()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if settings.trainer_threads:
        env[THREADS_ENV] = str(settings.trainer_threads)
    env.setdefault(TOKEN_CACHE_ENV, str(Path(settings.data_dir).resolve() / "cache" / "tokenized"))
    env["PYTHONUNBUFFERED"] = "1"
    return env | (extra or {})


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the worker dies (Linux), so no orphan works on."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def end_process_group(child: subprocess.Popen, grace: float = CANCEL_GRACE_SECONDS) -> None:
    """SIGTERM the child's process group, SIGKILL whatever is left after `grace` seconds."""
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(grace)
    with contextlib.suppress(ProcessLookupError):  # the group may outlive its leader (accelerate's ranks)
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


class ChildReader:
    """Reads the child's stdout lines into a queue and keeps a tail of its stderr (two small threads)."""

    def __init__(self, child: subprocess.Popen):
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=60)
        self.stderr_done = threading.Event()
        threading.Thread(target=self._pump_stdout, args=(child.stdout,), daemon=True).start()
        threading.Thread(target=self._pump_stderr, args=(child.stderr,), daemon=True).start()

    def _pump_stdout(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # end of output

    def _pump_stderr(self, stream) -> None:
        for line in stream:
            self.stderr_tail.append(line.rstrip("\n"))
        self.stderr_done.set()


def parse_event(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


class EventPump:
    """Turns a child's output lines into the job's progress, metrics and log (progress and log batched: at most
    every PROGRESS_EVERY_SECONDS / LOG_EVERY_SECONDS), and keeps its `done` event and its last `error` message.
    Shared by the local child (run_child) and the Ray launcher (app.jobs.ray_launch), whose lines arrive from
    the Ray job's log."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.done: dict | None = None
        self.error: str | None = None
        self.log_lines: list[str] = []
        self.pending_progress: tuple[float, str | None] | None = None
        self.last_progress = self.last_log = 0.0

    def feed(self, line: str) -> None:
        if not line:
            return
        event = parse_event(line)
        if event is None:
            self.log_lines.append(line)
        elif event["event"] == "progress":
            self.pending_progress = (float(event.get("progress", 0.0)), event.get("message"))
        elif event["event"] == "metrics":
            self.ctx.metrics(int(event.get("step", 0)), event.get("metrics") or {})
        elif event["event"] == "log":
            self.log_lines.append(str(event.get("message", "")))
        elif event["event"] == "done":
            self.done = event
        elif event["event"] == "error":
            self.error = str(event.get("message", "child process error"))

    def flush(self, final: bool = False) -> None:
        """Report what is pending when its interval has passed (everything when `final`)."""
        now = time.monotonic()
        if self.pending_progress and (now - self.last_progress >= PROGRESS_EVERY_SECONDS or final):
            self.ctx.progress(min(self.pending_progress[0], 0.99), self.pending_progress[1])
            self.pending_progress, self.last_progress = None, now
        if self.log_lines and (now - self.last_log >= LOG_EVERY_SECONDS or final):
            self.ctx.log("\n".join(self.log_lines) + "\n")
            self.log_lines, self.last_log = [], now


def run_child(ctx, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict:
    """Run a child to its end under job `ctx` (app.jobs.runner.JobContext), reporting its events as the job's
    progress, metrics and log; returns its `done` event. Raises JobCancelled on cancel, JobFailed when the child
    fails (its own error event, else its exit code and stderr tail)."""
    child = subprocess.Popen(command, cwd=ROOT, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, bufsize=1, start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
    (cwd / "child.pid").write_text(str(child.pid))
    reader = ChildReader(child)
    pump = EventPump(ctx)
    try:
        stdout_open = True
        while stdout_open:
            if ctx.cancel_event.is_set():
                end_process_group(child)
                raise JobCancelled()
            try:
                line = reader.lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            if line is None:
                stdout_open = False
            else:
                pump.feed(line)
            pump.flush(final=not stdout_open)
        returncode = child.wait()
    finally:
        end_process_group(child)
    reader.stderr_done.wait(5)
    stderr = "\n".join(reader.stderr_tail)
    if stderr:
        ctx.log(stderr[-4000:] + "\n")
    if returncode != 0 or pump.done is None:
        raise JobFailed(pump.error or f"The child exited with code {returncode}: {stderr[-1500:] or 'no output'}")
    return pump.done


def run_captured(command: list[str], *, timeout: float) -> str:
    """Run a short child outside any job (same environment, own process group, dies with us) and return its
    stdout; JobFailed with its stderr tail when it fails or outlives `timeout`."""
    child = subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        end_process_group(child, grace=1.0)
        raise JobFailed(f"{command[2] if len(command) > 2 else command[0]} ran past {timeout:.0f} s") from expired
    finally:
        end_process_group(child, grace=1.0)
    if child.returncode != 0:
        raise JobFailed(f"{' '.join(command[1:3])} failed: {stderr.strip()[-2000:]}")
    return stdout
