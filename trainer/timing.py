"""Where a job's time goes: the wall time of its phases, reported as `time/<phase>_s` metrics.

    phases = Phases()
    with phases("load_model"):
        ...
    phases.metrics()  -> {"time/load_model_s": 2.31, ...}

The phases every training kind reports (in this order): read_snapshot (the snapshot's rows from disk),
load_model (tokenizer and weights), tokenize (rows to token ids; a cache hit makes it near zero), prepare (the
TRL trainer's set-up: datasets on disk, DPO/KTO reference log-probs), train, evaluate (held-out split), save.
Generation reports load_model, read_prompts, generate. Plus `time/total_s` since the phases began.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Phases:
    """Wall-clock seconds per named phase (a phase entered twice adds up)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        """time/<phase>_s for every phase so far, and time/total_s since this object was made."""
        values = {f"time/{name}_s": round(seconds, 3) for name, seconds in self.seconds.items()}
        values["time/total_s"] = round(time.perf_counter() - self.started, 3)
        return values
