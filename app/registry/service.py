"""Model registry: register local checkpoints, look versions up, pick defaults. Services never commit."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app.audit import audit
from app.db import write_transaction
from app.errors import Conflict, NotFound, Unprocessable
from app.jobs.child import python_executable, run_captured
from app.limits import bad_character, column_length, parse_id
from app.models import Completion, Job, ModelEndpoint, ModelVersion, Project, Prompt, User
from app.registry.schemas import ModelVersionOut
from app.store import get_store
from app.webhooks.service import emit
from trainer.results import MODEL_KINDS


def version_json(version: ModelVersion) -> dict:
    """The version as the API, the CLI and webhook events show it (its shape: ModelVersionOut)."""
    return ModelVersionOut.of(version).model_dump(mode="json")


ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_version(version: ModelVersion) -> bool:
    """A LoRA adapter (peft) on its base version (base_version_id), rather than a full checkpoint."""
    return bool((version.manifest or {}).get("adapter"))


def adapter_base_path(directory: Path) -> Path | None:
    """The base checkpoint a LoRA adapter directory names (base_model_name_or_path), or None if not an adapter."""
    config_file = directory / ADAPTER_CONFIG
    if not config_file.is_file():
        return None
    try:
        base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (json.JSONDecodeError, AttributeError) as error:
        raise Unprocessable(f"{config_file} is not a valid adapter config ({error}).") from error
    if not base:
        raise Unprocessable(f"The adapter at {directory} does not name its base model (base_model_name_or_path).")
    return Path(base).expanduser().resolve()


def list_versions(
    db: Session, *, kind: str | None = None, project_id: int | None = None
) -> list[ModelVersion]:
    query = select(ModelVersion).order_by(ModelVersion.id.desc())
    if kind:
        query = query.where(ModelVersion.kind == kind)
    if project_id is not None:
        query = query.where(ModelVersion.project_id == project_id)
    return list(db.scalars(query))


def get_version(db: Session, ref: int | str, *, kind: str | None = None) -> ModelVersion:
    """A version by id (int or digits) or by name; `kind` checks it is the kind the caller needs."""
    version = None
    version_id = parse_id(str(ref))
    if version_id is not None:
        version = db.get(ModelVersion, version_id)
    if version is None and isinstance(ref, str) and len(ref) <= column_length(ModelVersion.name) \
            and bad_character(ref) is None:
        version = db.scalar(select(ModelVersion).where(ModelVersion.name == ref))
    if version is None:
        raise NotFound(f"No model version {ref!r}.")
    if kind and version.kind != kind:
        raise Unprocessable(f"Model version {version.name!r} is a {version.kind} model, not a {kind} model.")
    return version


def newest_version(db: Session, kind: str, project_id: int | None, *, local_only: bool = False) -> ModelVersion | None:
    """The project's newest version of this kind, else the newest one of any project (or none); `local_only`: a
    checkpoint on disk, not an endpoint (what training starts from)."""
    query = select(ModelVersion).where(ModelVersion.kind == kind).order_by(ModelVersion.id.desc()).limit(1)
    if local_only:
        query = query.where(~exists().where(ModelEndpoint.model_version_id == ModelVersion.id))
    if project_id is not None:
        found = db.scalar(query.where(ModelVersion.project_id == project_id))
        if found is not None:
            return found
    return db.scalar(query)


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", name or ""):
        raise Unprocessable("A model name uses letters, digits, '.', '_' and '-' (at most 200 characters).")
    return name


def register_version(db: Session, name: str, path: str | Path, kind: str, *, project: Project | None = None,
                     actor: User | None = None, manifest: dict | None = None) -> ModelVersion:  # fmt: skip
    """Register a local Hugging Face checkpoint directory (it must hold a config.json), or a LoRA adapter directory
    (adapter_config.json) whose base checkpoint is registered already: the version records that base."""
    if kind not in MODEL_KINDS:
        raise Unprocessable(f"kind must be one of {', '.join(MODEL_KINDS)}, not {kind!r}.")
    check_name(name)
    directory = Path(path).expanduser().resolve()
    base_version = None
    base_path = adapter_base_path(directory)
    if base_path is not None:
        base_version = db.scalar(select(ModelVersion).where(ModelVersion.path == str(base_path))
                                 .order_by(ModelVersion.id).limit(1))  # fmt: skip
        if base_version is None:
            raise Unprocessable(f"{directory} is a LoRA adapter on {base_path}, which is not registered: "
                                "register the base model first.")  # fmt: skip
    elif not (directory / "config.json").is_file():
        raise Unprocessable(f"{directory} is not a Hugging Face checkpoint directory (no config.json there).")
    if db.scalar(select(ModelVersion.id).where(ModelVersion.name == name)) is not None:
        raise Conflict(f"A model version named {name!r} exists already.")
    if manifest is None and (directory / "manifest.json").is_file():
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    manifest = dict(manifest or {})
    if base_version is not None:
        manifest.setdefault("adapter", True)
    version = ModelVersion(name=name, kind=kind, path=str(directory), project_id=project.id if project else None,
                           base_version_id=base_version.id if base_version else None,
                           metrics=manifest.get("metrics") or {}, manifest=manifest)  # fmt: skip
    db.add(version)
    db.flush()
    audit(db, actor, "model.register", "model_version", version.id, name=name, kind=kind)
    emit(db, "model.registered", version.project_id, version_json(version))
    return version


def project_texts(db: Session, project: Project, limit: int = 20000) -> list[str]:
    """Prompt and completion texts of a project: what a tiny tokenizer is trained on."""
    texts = []
    for messages in db.scalars(select(Prompt.messages).where(Prompt.project_id == project.id).limit(limit)):
        texts += [m.get("content", "") for m in messages or [] if isinstance(m, dict)]
    texts += db.scalars(select(Completion.text).join(Prompt, Prompt.id == Completion.prompt_id)
                        .where(Prompt.project_id == project.id).limit(limit))  # fmt: skip
    return [t for t in texts if t]


def build_tiny_models(texts: list[str], out_dir: Path, *, seed: int = 0) -> dict:
    """Run `python -m trainer.tiny OUT --texts F` in a child process (the app never imports torch)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
        handle.write("\n".join(t.replace("\n", " ") for t in texts))
        texts_file = handle.name
    command = [python_executable(), "-m", "trainer.tiny", str(out_dir), "--seed", str(seed)]
    try:
        stdout = run_captured(command + (["--texts", texts_file] if texts else []), timeout=600)
    finally:
        os.unlink(texts_file)
    return json.loads(stdout.strip().splitlines()[-1])


def init_tiny(
    db: Session, project: Project | None, *, actor: User | None = None, seed: int = 0
) -> list[ModelVersion]:
    """Build a tiny policy and reward model (tokenizer trained on the project's texts) and register both."""
    stem = f"tiny-{project.slug}" if project else "tiny"
    name, n = stem, 1
    while db.scalar(
        select(ModelVersion.id).where(ModelVersion.name.in_([f"{name}-policy", f"{name}-reward"]))
    ):
        n += 1
        name = f"{stem}-{n}"
    store = get_store()  # an object store: built in this machine's scratch, published once registered
    out_dir = Path(store.location("models", name)) if store.local else store.scratch("staging", "models") / name
    if not store.local:
        shutil.rmtree(out_dir, ignore_errors=True)  # left by an attempt that failed; never published
    if out_dir.exists():
        raise Conflict(f"{out_dir} exists already.")
    texts = project_texts(db, project) if project else []
    paths = build_tiny_models(texts, out_dir, seed=seed)
    # The build took seconds: on SQLite the read transaction from before it cannot be upgraded to a write
    # once a worker has written meanwhile, so take the write lock afresh.
    write_transaction(db)
    versions = [register_version(db, f"{name}-{kind}", path, kind, project=project, actor=actor)
            for kind, path in paths.items()]  # fmt: skip
    return _publish_tiny(versions, name)


def _publish_tiny(versions: list[ModelVersion], name: str) -> list[ModelVersion]:
    """On an object store, each tiny model into the store (files, manifest last); the version keeps its location."""
    store = get_store()
    if store.local:
        return versions
    for version in versions:
        location = store.location("models", name, version.kind)
        store.publish(version.path, location)  # StoreError (502) with the store's message: the request rolls back
        version.path = location
    return versions


def register_job_output(db: Session, job: Job, name: str, output_dir: str | Path, manifest: dict,
                        dataset_id: int | None, dataset_sha256: str | None) -> ModelVersion:  # fmt: skip
    """The model a training job wrote, with its lineage (base version, job, dataset). Idempotent per job."""
    existing = db.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
    if existing is not None:
        return existing
    version = ModelVersion(
        name=name, kind=manifest["kind"], path=str(output_dir), project_id=job.project_id,
        base_version_id=job.base_model_id, job_id=job.id, dataset_id=dataset_id,
        dataset_sha256=manifest.get("dataset_sha256") or dataset_sha256,
        metrics=manifest.get("metrics") or {}, manifest=manifest,
    )  # fmt: skip
    db.add(version)
    db.flush()
    emit(db, "model.registered", version.project_id, version_json(version))
    return version
