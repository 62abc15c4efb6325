"""Multi-process launches: the shipped accelerate configs and their checks (torch-free, accelerate-free import).

    ACCELERATE_CONFIGS -> {name: path}             cpu, ddp, fsdp, deepspeed_zero2, deepspeed_zero3 (trainer/accelerate/)
    resolve_accelerate_config(value) -> Path        a shipped name, or a path to the user's own config file
    trainer.launch_check.validate_accelerate_config(path) -> dict   parsed by accelerate itself (kept apart: the
                                                    app imports this module, and never accelerate)

A job runs multi-process with params {"launcher": "accelerate", "accelerate_config": "ddp"} (or a file path):
the worker starts `accelerate launch --config_file ... -m trainer.run spec.json`. Every rank runs the same
spec; only the main process reports progress and writes the output (trainer.progress, trainer.run).
"""

from __future__ import annotations

from pathlib import Path

LAUNCHERS = ("python", "accelerate", "ray")
"""How the worker starts the child: plain `python -m trainer.run`, `accelerate launch` for many processes, or as a
Ray job on a Ray cluster (app.jobs.ray_launch; `accelerate launch` inside it with an accelerate_config)."""
CONFIG_DIR = Path(__file__).resolve().parent / "accelerate"
ACCELERATE_CONFIGS: dict[str, Path] = {path.stem: path for path in sorted(CONFIG_DIR.glob("*.yaml"))}
"""The shipped configs by name: cpu (several CPU processes, gloo), ddp, fsdp, deepspeed_zero2, deepspeed_zero3."""


def resolve_accelerate_config(value: str | Path) -> Path:
    """A shipped config's name (e.g. "ddp") or a path to a config file, as an existing file's Path."""
    text = str(value)
    if text in ACCELERATE_CONFIGS:
        return ACCELERATE_CONFIGS[text]
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(
            f"accelerate_config {text!r} is neither a shipped config ({', '.join(ACCELERATE_CONFIGS)}) nor a file"
        )
    return path
