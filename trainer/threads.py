"""How a trainer process uses the machine: how many CPU threads, where it caches tokenized rows (torch-free: the
worker imports it too, to set the child's environment).

    cpu_budget() -> int                     CPUs this process may run on: its affinity, capped by the cgroup quota
    plan_threads(processes) -> ThreadPlan   the setting when given, else the budget shared among the processes
    configure_threads() -> ThreadPlan       in the trainer child, before torch is imported: sets OMP/MKL threads
    trainer.models.fit_threads_to_model(model)   once the model is loaded: torch.set_num_threads (tiny: fewer)

Every trainer process uses `cpu_budget() // processes` threads, where processes is the number of processes the
launch starts on this machine (accelerate / torchrun's LOCAL_WORLD_SIZE; 1 for `python -m trainer.run`). So a
2-process launch on 16 CPUs runs 8 threads in each, and a worker pinned to 4 CPUs (taskset, a container's CPU
quota) uses 4. The setting THREADS_ENV (`RANKFORGE_TRAINER_THREADS`, per process) overrides the count;
`RANKFORGE_TRAINER_OMP_THREADS` is its older name. A single-process child also follows an OMP_NUM_THREADS
already in its environment (the usual OpenMP knob); under a multi-process launch that variable is ignored,
because torchrun sets it to 1 on its own.

Tiny models gain nothing from threads: below SMALL_MODEL_PARAMETERS the trainer narrows to SMALL_MODEL_THREADS
(measured on the demo's models: see the constants), unless the count was set.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

THREADS_ENV = "RANKFORGE_TRAINER_THREADS"
"""Threads per trainer process (overrides the CPU-sized default)."""
THREADS_ENV_OLD = "RANKFORGE_TRAINER_OMP_THREADS"
"""The older, undocumented name of THREADS_ENV, still honoured."""
TOKEN_CACHE_ENV = "RANKFORGE_TRAINER_CACHE"
"""Directory of the tokenization cache (trainer.encoding.encode_all); the worker sets it under its artifact store,
<data_dir>/cache/tokenized. Unset: rows are tokenized on every run."""
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2 CPU quota: "<quota> <period>" in microseconds, or "max <period>" for none."""

SMALL_MODEL_PARAMETERS = 5_000_000
SMALL_MODEL_THREADS = 1
"""Below 5M parameters (the demo's tiny models: ~0.2M) one thread: on a 2-core machine two threads trained the
tiny reward and DPO jobs at best a little faster (0.57 s vs 0.82 s, 0.67 s vs 0.78 s of training) and, once
other work shared the cores, 20-25x slower (11.8 s vs 0.47 s, 22.7 s vs 1.5 s): OpenMP's threads wait on each
other. Real models (20M parameters and up) gain from every core (bench/train_parity.py)."""


def _explicit(value: str | None) -> int | None:
    """A positive integer setting, or None when unset or not a positive integer."""
    if value is None or not value.strip():
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 1 else None


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> int | None:
    """CPUs the cgroup quota allows (rounded up), or None without a quota (or without cgroup v2)."""
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def cpu_budget(cgroup_path: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its CPU affinity (taskset, cpusets), capped by the cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_path)
    return max(1, min(cpus, limit) if limit else cpus)


def setting(environ: dict[str, str] | None = None) -> int | None:
    """The thread count set by THREADS_ENV (or its older name), or None."""
    environ = os.environ if environ is None else environ
    return _explicit(environ.get(THREADS_ENV)) or _explicit(environ.get(THREADS_ENV_OLD))


def local_processes(environ: dict[str, str] | None = None) -> int:
    """Processes of this launch on this machine (torchrun / accelerate set LOCAL_WORLD_SIZE); 1 otherwise."""
    environ = os.environ if environ is None else environ
    return _explicit(environ.get("LOCAL_WORLD_SIZE")) or 1


@dataclass(frozen=True)
class ThreadPlan:
    """The thread count of one trainer process and where it came from."""

    threads: int
    source: str
    """"setting" (THREADS_ENV or its older name), "OMP_NUM_THREADS" (single process) or "cpus" (the budget)"""
    processes: int = 1
    cpus: int = 1

    def for_model(self, parameters: int) -> int:
        """The count for a loaded model: SMALL_MODEL_THREADS for a tiny one when the count was not set."""
        if self.source != "cpus" or parameters >= SMALL_MODEL_PARAMETERS:
            return self.threads
        return min(self.threads, SMALL_MODEL_THREADS)


def plan_threads(processes: int = 1, environ: dict[str, str] | None = None) -> ThreadPlan:
    """The setting when given; else an OMP_NUM_THREADS already set for a single process; else the CPU budget
    shared among `processes`."""
    environ = os.environ if environ is None else environ
    cpus = cpu_budget()
    if (chosen := setting(environ)) is not None:
        return ThreadPlan(chosen, "setting", processes, cpus)
    if processes <= 1 and (inherited := _explicit(environ.get("OMP_NUM_THREADS"))) is not None:
        return ThreadPlan(inherited, "OMP_NUM_THREADS", processes, cpus)
    return ThreadPlan(max(1, cpus // max(1, processes)), "cpus", processes, cpus)


_PLAN: ThreadPlan | None = None


def configure_threads() -> ThreadPlan:
    """In the trainer child (trainer.run), before torch is imported: size OpenMP/MKL threads (the libraries read
    these once). trainer.models.fit_threads_to_model sets torch's count once the model is loaded. Idempotent."""
    global _PLAN
    if _PLAN is None:
        _PLAN = plan_threads(local_processes())
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(_PLAN.threads)
    return _PLAN


def current_plan() -> ThreadPlan:
    """The plan configure_threads made in this process; elsewhere (a kind's main called in-process) the plan it
    would make, leaving the environment as it is."""
    return _PLAN or plan_threads(local_processes())
