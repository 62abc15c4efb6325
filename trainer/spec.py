"""The job-spec contract between the app and the trainer: one torch-free dataclass both sides use.

The worker builds a `JobSpec` and writes it as `spec.json` next to the job's files; the trainer child
(`python -m trainer.run spec.json`) reads it back with `JobSpec.load`, which validates everything once
(kind, paths, params) before any model is loaded. Each kind's `main(spec, out_dir)` then reads typed
fields (`spec.base_model`, `spec.args.learning_rate`), never a raw dict.

    JobSpec(kind=..., output_dir=..., params={...})   validates and parses params into `args` on creation
    spec.write(path)                                   atomic JSON file (what the worker hands the child)
    JobSpec.load(path)                                 the child's side; ValueError with a clear message

Because the file is the whole interface, a trainer can run on another machine that mounts the store.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from trainer.launch import LAUNCHERS
from trainer.params import KIND_INFO, KINDS, parse_params


@dataclass(frozen=True)
class JobSpec:
    """One trainer run. Paths are absolute strings (the file may be read on another machine)."""

    kind: str
    """one of trainer.params.KINDS"""
    output_dir: str
    """where the result appears, whole or not at all (the trainer writes a sibling temp dir and renames it)"""
    job_id: int | None = None
    """the app's job id, recorded in the output's manifest (a retried job recognises its own finished output)"""
    base_model: str | None = None
    """local Hugging Face checkpoint the kind starts from (every kind but score)"""
    reward_model: str | None = None
    """local reward model checkpoint (ppo, score, and grpo/rloo with a reward_model reward)"""
    dataset_path: str | None = None
    """dataset snapshot directory (reward, dpo, kto; optional prompts source for ppo/grpo/rloo)"""
    prompts_path: str | None = None
    """JSONL of {prompt_id, prompt, ...} rows (generate, score, and ppo/grpo/rloo without a snapshot)"""
    params: dict[str, Any] = field(default_factory=dict)
    """the kind's hyperparameters as given (JSON); unknown names or wrong types are refused"""
    launcher: str = "python"
    """python, accelerate or ray (trainer.launch.LAUNCHERS)"""
    seed: int = 0
    """random seed of the run"""
    args: Any = field(init=False, repr=False, compare=False)
    """params parsed into the kind's Args dataclass (trainer.params.ARGS[kind]): what the kind's main reads"""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"job spec: unknown kind {self.kind!r}; known kinds: {', '.join(KINDS)}")
        if not self.output_dir:
            raise ValueError("job spec: output_dir is required")
        if not Path(self.output_dir).is_absolute():
            raise ValueError(f"job spec: output_dir must be an absolute path, got {self.output_dir}")
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"job spec: launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"job spec: seed must be an integer, got {self.seed!r}")
        if not isinstance(self.params, dict):
            raise ValueError("job spec: params must be an object")
        object.__setattr__(self, "args", parse_params(self.kind, self.params))

    @property
    def output_kind(self) -> str:
        return KIND_INFO[self.kind].output

    @classmethod
    def from_dict(cls, data: Any) -> JobSpec:
        if not isinstance(data, dict):
            raise ValueError("job spec must be a JSON object")
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"job spec: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in data.items() if v is not None or k not in ("params", "launcher", "seed")})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("args")
        return data

    @classmethod
    def load(cls, path: str | Path) -> JobSpec:
        spec_path = Path(path)
        if not spec_path.is_file():
            raise FileNotFoundError(f"job spec not found: {spec_path}")
        try:
            data = json.loads(spec_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"job spec {spec_path} is not valid JSON ({error})") from error
        return cls.from_dict(data)

    def write(self, path: str | Path) -> Path:
        """Write spec.json atomically (temp file, fsync, rename)."""
        path = Path(path)
        temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        return path
