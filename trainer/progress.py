"""JSON-lines progress protocol between a trainer child process and the worker that reads its stdout.

Every event is one JSON object on one line of stdout:

    {"event": "progress", "progress": 0.42, "message": "step 10/24"}
    {"event": "metrics", "step": 10, "metrics": {"loss/total": 0.61}}
    {"event": "log", "message": "..."}
    {"event": "done", ...} / {"event": "error", "message": "..."}

Only the main process (rank 0) emits, so a multi-process `accelerate launch` prints each event once.
`claim_stdout()` keeps the real stdout for events and sends library prints (TRL, transformers) to stderr,
so nothing but events lands on stdout.

SIGTERM (cancel) ends the child promptly: `install_sigterm_handler()` raises `Cancelled` in the main thread
at the next Python bytecode and, should that be swallowed or stuck in native code, hard-exits after a grace.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
from typing import Any, TextIO

SIGTERM_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
SIGTERM_GRACE_SECONDS = 5.0  # the worker expects the child gone within 10 s of a cancel

_event_stream: TextIO | None = None
_stream_lock = threading.Lock()
_cancel_requested = threading.Event()


class Cancelled(BaseException):  # noqa: N818 - reads like KeyboardInterrupt, which it mirrors
    """Raised in the main thread on SIGTERM. A BaseException so `except Exception` in libraries lets it pass."""


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed (accelerate / torchrun) launch."""
    return int(os.environ.get("RANK", "0")) == 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0


def claim_stdout() -> None:
    """Reserve the current stdout for events and send every other print to stderr."""
    global _event_stream
    if _event_stream is None:
        _event_stream = sys.stdout
        sys.stdout = sys.stderr


def _jsonable(value: Any) -> Any:
    """Turn tensors, numpy scalars and NaN/inf into plain JSON values."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def emit(event: str, **fields: Any) -> None:
    """Write one event as a JSON line on the event stream (stdout), flushed at once."""
    if not is_main_process():
        return
    line = json.dumps({"event": event, **_jsonable(fields)}, ensure_ascii=False)
    stream = _event_stream or sys.stdout
    with _stream_lock:
        stream.write(line + "\n")
        stream.flush()


def progress(fraction: float, message: str = "") -> None:
    """Report how far the job is, 0..1 (clamped)."""
    emit("progress", progress=round(min(1.0, max(0.0, float(fraction))), 4), message=message)


def metrics(step: int, values: dict[str, Any]) -> None:
    """Report metrics for one logging step; names should be grouped like `loss/total`, `rewards/chosen`."""
    emit("metrics", step=int(step), metrics=values)


def log(message: str) -> None:
    """Report a human-readable line."""
    emit("log", message=message)


def map_metric_name(name: str) -> str:
    """Map a Trainer/TRL log key into a grouped metric name.

    "loss" -> "loss/total"; "eval_loss" -> "eval/loss"; "eval_rewards/chosen" -> "eval/rewards/chosen";
    names already grouped ("rewards/chosen", "logps/rejected") are kept; any other bare name goes under
    "train/" ("grad_norm" -> "train/grad_norm", "learning_rate" -> "train/learning_rate").
    """
    if name.startswith("eval_"):
        return "eval/" + name[len("eval_") :]
    if name.startswith("train_"):  # end-of-training summary: train_runtime, train_loss, ...
        return "train/" + name[len("train_") :]
    if name == "loss":
        return "loss/total"
    if "/" in name:
        return name
    return "train/" + name


def map_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """Grouped names for every numeric entry of a Trainer log dict (drops bookkeeping like total_flos)."""
    mapped: dict[str, float] = {}
    for name, value in logs.items():
        if name == "total_flos":
            continue
        value = _jsonable(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        mapped[map_metric_name(name)] = value
    return mapped


def cancel_requested() -> bool:
    """True once SIGTERM has been received."""
    return _cancel_requested.is_set()


def _hard_exit_after_grace() -> None:
    # Runs only if the process is still alive after the grace: the Cancelled exception got stuck somewhere.
    threading.Event().wait(SIGTERM_GRACE_SECONDS)
    emit("error", message="cancelled (SIGTERM)")
    os._exit(SIGTERM_EXIT_CODE)


def _on_sigterm(signum: int, frame: Any) -> None:
    first = not _cancel_requested.is_set()
    _cancel_requested.set()
    if first:
        threading.Thread(target=_hard_exit_after_grace, name="sigterm-grace", daemon=True).start()
        raise Cancelled("cancelled (SIGTERM)")


_handler_installed = False


def install_sigterm_handler() -> None:
    """Make SIGTERM end the process promptly (idempotent; a no-op outside the main thread)."""
    global _handler_installed
    if _handler_installed or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    _handler_installed = True


def _json_lines_callback_class() -> type:
    """JsonLinesCallback, defined on first use: transformers' TrainerCallback drags in transformers.trainer_utils
    and with it peft (seconds of import), which the jobs that never train (generate, score, judge, verify) skip."""
    from transformers import TrainerCallback

    class JsonLinesCallback(TrainerCallback):
        """Trainer callback that reports progress each step and grouped metrics each log.

        progress_start/progress_end map training onto a slice of the job's 0..1 progress, leaving room for
        the work before (loading) and after (evaluation, saving). Also installs the SIGTERM handler and stops
        training at the next step once a cancel arrived.
        """

        def __init__(self, progress_start: float = 0.05, progress_end: float = 0.9, label: str = "step"):
            super().__init__()
            self.progress_start = progress_start
            self.progress_end = progress_end
            self.label = label
            self.history: list[dict[str, Any]] = []  # every metrics event, for final summaries
            self._last_reported = -1.0
            install_sigterm_handler()

        def _fraction(self, state: Any) -> float:
            total = max(1, int(state.max_steps or 1))
            done = min(1.0, state.global_step / total)
            return self.progress_start + (self.progress_end - self.progress_start) * done

        def on_train_begin(self, args, state, control, **kwargs):
            progress(self.progress_start, f"training: {state.max_steps} steps")

        def on_step_end(self, args, state, control, **kwargs):
            if cancel_requested():
                raise Cancelled("cancelled (SIGTERM)")
            # At most ~200 progress lines per run, however many steps: the worker stores each one.
            fraction = self._fraction(state)
            if fraction - self._last_reported >= 0.005 or state.global_step >= state.max_steps:
                self._last_reported = fraction
                progress(fraction, f"{self.label} {state.global_step}/{state.max_steps}")

        def last(self, name: str, default: Any = None) -> Any:
            """The last logged value of a grouped metric (e.g. "loss/total"), or default."""
            for entry in reversed(self.history):
                if name in entry["metrics"]:
                    return entry["metrics"][name]
            return default

        def on_log(self, args, state, control, logs=None, **kwargs):
            values = map_metrics(logs or {})
            if values:
                self.history.append({"step": state.global_step, "metrics": values})
                metrics(state.global_step, values)

    return JsonLinesCallback


def __getattr__(name: str) -> Any:  # PEP 562: `progress.JsonLinesCallback` is the class, built when first asked for
    if name == "JsonLinesCallback":
        globals()[name] = cls = _json_lines_callback_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
