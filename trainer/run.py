"""Entry point of a trainer job: `python -m trainer.run SPEC.json` (or under `accelerate launch ... -m trainer.run`).

Reads the job spec (trainer.spec.JobSpec, validated once), runs the kind's `main(spec, out_dir)` into a sibling
temp dir `<output_dir>.partial-<pid>`, writes manifest.json last, fsyncs, and renames the temp dir to output_dir: output_dir appears whole or not at
all. Reports on stdout as JSON lines (see trainer.progress); on failure the last line is
{"event": "error", "message": ...} and the exit code is 1 (143 when cancelled by SIGTERM).

What each kind writes is its `output` in the kind table (trainer.params.KIND_INFO): a "reward" or "policy" model,
or generations.jsonl, scores.jsonl, judgments.jsonl; every kind also writes result.json, its typed result
(trainer.results), which is all the app reads back.

Importing this module does not import torch: DEFAULTS (each kind's default params) can be read cheaply,
though the app should prefer trainer.params, which holds the same.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import shutil
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainer import __version__
from trainer.audit import read_audit
from trainer.durable import fsync_path
from trainer.params import DEFAULTS, FIELD_DOCS, KIND_INFO
from trainer.results import build_result, write_result
from trainer.spec import JobSpec

__all__ = ["DEFAULTS", "FIELD_DOCS", "load_spec", "main", "run"]

# Test hook: set to "before_rename" to fail after everything is written but before the rename, which shows a
# failed write never leaves output_dir behind. Not for production use.
FAIL_AT_ENV = "RANKFORGE_TRAINER_FAIL_AT"


def load_spec(path: str | Path) -> JobSpec:
    """Read and check a spec.json once: kind known, output_dir absolute, params valid (see trainer.spec)."""
    return JobSpec.load(path)


def _resolve_callable(kind: str):
    module_name, function_name = KIND_INFO[kind].entry.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise NotImplementedError(
                f"job kind {kind!r} is not available ({module_name} is missing)"
            ) from error
        raise
    return getattr(module, function_name)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under root to disk (so the rename publishes durable content)."""
    for directory, _subdirs, files in os.walk(root):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(directory)


def _dataset_sha256(spec: JobSpec) -> str | None:
    if not spec.dataset_path:
        return None
    manifest = Path(spec.dataset_path) / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("sha256")
    except json.JSONDecodeError:
        return None


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def partial_dir_for(output_dir: Path) -> Path:
    """The sibling temp dir `<output_dir>.partial-<pid>`. Under a multi-process launch every rank, on every node,
    must name the same dir (they share datasets through it), so the launch's run id stands in for the pid."""
    owner: str | int = os.getpid()
    if _world_size() > 1:
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
        owner = (
            run_id if run_id and run_id != "none" else f"{os.environ.get('MASTER_PORT', '0')}-{os.getppid()}"
        )
    return output_dir.with_name(f"{output_dir.name}.partial-{owner}")


def write_manifest(out_dir: Path, spec: JobSpec, metrics: dict[str, Any]) -> None:
    manifest = {
        "kind": spec.output_kind,
        "job_kind": spec.kind,
        "job_id": spec.job_id,
        "base_model": spec.base_model,
        "reward_model": spec.reward_model,
        "dataset_path": spec.dataset_path,
        "dataset_sha256": _dataset_sha256(spec),
        "prompts_path": spec.prompts_path,
        "params": asdict(spec.args),
        "seed": spec.seed,
        "metrics": metrics,
        "audit": read_audit(out_dir),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "trainer_version": __version__,
        **_model_facts(out_dir, spec),
    }
    path = out_dir / "manifest.json"
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    if KIND_INFO[spec.kind].trains_model:
        from trainer.card import model_card

        (out_dir / "README.md").write_text(model_card(json.loads(path.read_text(encoding="utf-8"))), encoding="utf-8")


def _model_facts(out_dir: Path, spec: JobSpec) -> dict[str, Any]:
    """What the registry and the model card need beyond the spec: the tokenizer setup used (template, EOS, pad,
    added tokens), whether the output is a LoRA adapter (and on which base) or an adapter merged in."""
    from trainer.encoding import PREPARED

    source = spec.base_model if KIND_INFO[spec.kind].base_model else spec.reward_model
    setup = PREPARED.get(str(Path(source))) if source else None
    facts: dict[str, Any] = {"tokenizer": setup.to_dict() if setup else None}
    if KIND_INFO[spec.kind].trains_model:
        adapter = (out_dir / "adapter_config.json").is_file()
        facts["adapter"] = adapter
        facts["merged_adapter"] = bool(not adapter and getattr(spec.args, "use_lora", False))
        if adapter:
            base = json.loads((out_dir / "adapter_config.json").read_text(encoding="utf-8"))
            facts["adapter_base_model"] = base.get("base_model_name_or_path")
    return facts


def run(spec: JobSpec) -> dict[str, Any]:
    """Run one job spec to completion: returns the final metrics; output_dir exists afterwards (main process)."""
    from trainer import progress

    kind = spec.kind
    output_dir = Path(spec.output_dir)
    if output_dir.exists():
        raise FileExistsError(f"output_dir already exists: {output_dir} (each job writes a new directory)")
    main_process = progress.is_main_process()
    partial = partial_dir_for(output_dir)
    if main_process:
        if partial.exists():  # left by a killed earlier attempt of the same pid: never ours to keep
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    try:
        progress.progress(0.0, f"{kind}: starting")
        _check_models(spec)
        _seed_everything(spec.seed)
        kind_main = _resolve_callable(kind)
        metrics = kind_main(spec, partial)
        if not main_process:
            return metrics
        progress.progress(0.97, "writing output")
        write_manifest(partial, spec, metrics)
        write_result(build_result(spec.output_kind, job_kind=kind, job_id=spec.job_id, output_dir=output_dir,
                                  metrics=metrics, kl_metric=KIND_INFO[kind].kl_metric,
                                  loss_metric=KIND_INFO[kind].loss_metric), partial)  # fmt: skip
        _fsync_tree(partial)
        if os.environ.get(FAIL_AT_ENV) == "before_rename":
            raise RuntimeError(f"forced failure before rename ({FAIL_AT_ENV})")
        if output_dir.exists():
            raise FileExistsError(f"output_dir appeared while the job ran: {output_dir}; not overwriting it")
        os.rename(partial, output_dir)
        fsync_path(output_dir.parent)
        return metrics
    finally:
        if main_process and partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def _check_models(spec: JobSpec) -> None:
    """Fail fast, naming the path, when a model the kind needs is missing (before heavy imports and data work)."""
    from trainer.models import check_checkpoint

    required_models = getattr(spec.args, "required_models", None)
    if required_models is not None:  # the models its params choose (a judge's method), if any
        for role, name in required_models().items():
            check_checkpoint(getattr(spec, role), name)
        return
    info = KIND_INFO[spec.kind]
    if info.base_model is not None:
        check_checkpoint(spec.base_model, "base model")
    if info.reward_model == "required" or spec.reward_model:
        check_checkpoint(spec.reward_model, "reward model")


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    try:
        from transformers import set_seed
    except ImportError:  # pragma: no cover
        return
    set_seed(seed)


def _quiet_libraries() -> None:
    """Offline, no telemetry, no tokenizer fork warnings; library logs stay on stderr."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_DISABLED", "true")


# Our own checks raise these with a message written for people; anything else gets its type name in front.
_PLAIN_ERRORS = (FileNotFoundError, FileExistsError, ValueError, NotImplementedError)


def error_message(error: BaseException) -> str:
    """The human message of an error event."""
    text = str(error).strip()
    if isinstance(error, _PLAIN_ERRORS) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m trainer.run SPEC.json. Returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    _quiet_libraries()
    from trainer.threads import configure_threads

    configure_threads()  # before torch is imported: OpenMP reads its thread count once (trainer.threads)
    from trainer import progress

    progress.claim_stdout()
    progress.install_sigterm_handler()
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        progress.emit("error", message="usage: python -m trainer.run SPEC.json")
        return 2
    try:
        spec = load_spec(argv[0])
        metrics = run(spec)
    except progress.Cancelled:
        progress.emit("error", message="cancelled (SIGTERM)")
        return progress.SIGTERM_EXIT_CODE
    except Exception as error:  # every failure ends as one clear error event
        traceback.print_exc(file=sys.stderr)
        progress.emit("error", message=error_message(error))
        return 1
    progress.emit("done", output_dir=spec.output_dir, metrics=metrics, kind=spec.output_kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
