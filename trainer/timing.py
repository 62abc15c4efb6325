"""Where a job's time goes: the wall time of its phases, reported as `time/<phase>_s` metrics.

    phases = Phases()
    with phases("load_model"):
        ...
    phases.metrics()  -> {"time/load_model_s": 2.31, ...}

The phases every training kind reports (in this order): read_snapshot (the snapshot's rows from disk),
load_model (tokenizer and weights), tokenize (rows to token ids; a cache hit makes it near zero), prepare (the
TRL trainer's set-up: datasets on disk, DPO/KTO reference log-probs), train, evaluate (held-out split), save.
Generation reports load_model, read_prompts, generate. Plus `time/startup_s` (the process's life before the
phases began: interpreter start and the imports of torch, transformers and TRL) and `time/total_s` (start-up
included).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path


class Phases:
    """Wall-clock seconds per named phase (a phase entered twice adds up)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.startup = process_age()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        """time/<phase>_s for every phase so far, time/startup_s, and time/total_s since the process started."""
        values = {f"time/{name}_s": round(seconds, 3) for name, seconds in self.seconds.items()}
        if self.startup is not None:
            values["time/startup_s"] = round(self.startup, 3)
        values["time/total_s"] = round(time.perf_counter() - self.started + (self.startup or 0.0), 3)
        return values


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc), or None where that cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii")
        uptime = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
        started_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, after the comm field
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
