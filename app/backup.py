"""`rankforge db backup PATH` and `rankforge db restore PATH`.

A backup is a directory:
- `database.sqlite` (SQLite's online backup API: a consistent copy while the server and worker keep writing) or
  `database.pgdump` (`pg_dump --format=custom`, one consistent snapshot of a PostgreSQL database);
- `manifest.json`: when, from which dialect and schema revision, the dump's sha256, and every artifact the
  database points at (dataset snapshots and model versions in the artifact store) file by file with its size
  and sha256.

The backup goes to a local directory or through the artifact store (app.store) to any fsspec URL
(`s3://bucket/prefix/...`; `rankforge db backup` without a target: the configured store's `backups/<UTC time>`):
written locally first, then published as one artifact, the dump and manifest.json uploaded and the store manifest
last, so a backup whose upload failed or was cut off has no store manifest and a restore refuses it
(`backup_to_store`, `fetch_backup`: streamed to a local temporary directory, checked against the store manifest's
sha256s, then restored as a local one).

The artifact store itself (checkpoints can be gigabytes) is backed up with the data directory (or, for an object
store named by RANKFORGE_ARTIFACT_STORE, by the store's own versioning or replication), not copied here; artifacts
in an object store are listed from their store manifests (app.store), without downloading them:
the manifest lets a restore check that the store it finds holds exactly the files the restored database
expects. A restore verifies the dump's sha256 first, refuses a non-empty target database unless forced, loads
the dump into RANKFORGE_DATABASE_URL, then verifies every listed artifact and reports what is missing or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from app.errors import BackupError
from app.store import STORE_MANIFEST, ArtifactNotFound, StoreError, get_store, is_url, open_location

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DUMP_NAMES = {"sqlite": "database.sqlite", "postgresql": "database.pgdump"}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dialect(url: str) -> str:
    name = sa.engine.make_url(url).get_backend_name()
    if name not in DUMP_NAMES:
        raise BackupError(f"Backups support SQLite and PostgreSQL, not {name!r}.")
    return name


def _sqlite_path(url: str) -> Path:
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("An in-memory SQLite database cannot be backed up or restored.")
    return Path(database)


def _libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq (pg_dump, pg_restore) takes it: no '+driver'."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} was not found on PATH. PostgreSQL backups need the PostgreSQL client tools "
                          f"(pg_dump and pg_restore, the server's major version or newer; Debian/Ubuntu: "
                          f"apt-get install postgresql-client).")  # fmt: skip
    return path


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupError(f"{what} failed ({Path(command[0]).name} exit {result.returncode}): "
                          f"{result.stderr.strip()[-2000:]}")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# artifacts


def _artifact_paths(engine: sa.Engine) -> list[tuple[str, int, str]]:
    """(kind, id, path) of every dataset snapshot and model version with a path (an endpoint's path is its server's
    URL, not an artifact: left out)."""
    with engine.connect() as conn:
        datasets = conn.execute(sa.text("SELECT id, path FROM dataset_snapshot WHERE path IS NOT NULL")).all()
        models = conn.execute(sa.text("SELECT id, path FROM model_version WHERE path IS NOT NULL AND NOT EXISTS "
                                      "(SELECT 1 FROM model_endpoint e WHERE e.model_version_id = model_version.id)")).all()
    return [("dataset", i, p) for i, p in datasets] + [("model", i, p) for i, p in models]


def _relative(path: Path, data_dir: Path) -> str:
    """A path inside the artifact store as relative to it (the store may move between backup and restore)."""
    try:
        return str(path.resolve().relative_to(data_dir.resolve()))
    except ValueError:
        return str(path)


def _resolve(stored: str, data_dir: Path) -> Path:
    path = Path(stored)
    return path if path.is_absolute() else data_dir / path


def list_artifacts(engine: sa.Engine, data_dir: Path) -> list[dict]:
    """Every file of every artifact the database points at, with size and sha256."""
    out = []
    for kind, artifact_id, stored in _artifact_paths(engine):
        if is_url(stored):  # in an object store: its store manifest lists the files (nothing is downloaded)
            out.append(_stored_artifact(kind, artifact_id, stored))
            continue
        root = Path(stored)
        entry: dict = {"kind": kind, "id": artifact_id, "path": _relative(root, data_dir), "files": []}
        if not root.exists():
            entry["missing"] = True
        else:
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for file in files:
                entry["files"].append({"path": _relative(file, data_dir), "size": file.stat().st_size,
                                       "sha256": sha256_file(file)})  # fmt: skip
        out.append(entry)
    return out


def _stored_artifact(kind: str, artifact_id: int, location: str) -> dict:
    """An artifact in an object store (app.store), its files as its store manifest lists them, by location."""
    entry: dict = {"kind": kind, "id": artifact_id, "path": location, "files": []}
    try:
        manifest = open_location(location).manifest()
    except (ArtifactNotFound, StoreError):
        entry["missing"] = True
        return entry
    entry["sha256"] = manifest["sha256"]
    entry["files"] = [{"path": f"{location}/{name}", "size": info["bytes"], "sha256": info["sha256"]}
                      for name, info in sorted(manifest["files"].items())]  # fmt: skip
    return entry


@dataclass
class ArtifactCheck:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.changed


def verify_artifacts(manifest: dict, data_dir: Path) -> ArtifactCheck:
    check = ArtifactCheck()
    for artifact in manifest.get("artifacts", []):
        if is_url(artifact["path"]):  # an object store's artifact: its store manifest now, and each object's size
            # (a HEAD request each; the content's sha256 is checked whenever a machine downloads it: app.store)
            stored = open_location(artifact["path"])
            try:
                now = stored.manifest()["files"]
            except (ArtifactNotFound, StoreError):
                now = {}
            for file in artifact["files"]:
                check.checked += 1
                name = file["path"].removeprefix(artifact["path"] + "/")
                try:
                    size = stored.fs.info(f"{stored.path.rstrip('/')}/{name}")["size"] if name in now else None
                except FileNotFoundError:
                    size = None
                if size is None:
                    check.missing.append(file["path"])
                elif (size, now[name]["sha256"]) != (file["size"], file["sha256"]):
                    check.changed.append(file["path"])
            continue
        for file in artifact["files"]:
            check.checked += 1
            path = _resolve(file["path"], data_dir)
            if not path.is_file():
                check.missing.append(file["path"])
            elif path.stat().st_size != file["size"] or sha256_file(path) != file["sha256"]:
                check.changed.append(file["path"])
    return check


# ---------------------------------------------------------------------------------------------------------------
# backup


def backup(url: str, data_dir: Path, target: Path) -> dict:
    """Write a backup of `url` (and the list of its artifacts) into the new directory `target`; the manifest."""
    dialect = _dialect(url)
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} exists and is not empty: choose a new directory for the backup.")
    target.mkdir(parents=True, exist_ok=True)
    dump = target / DUMP_NAMES[dialect]
    partial = dump.with_name(dump.name + ".partial")
    if dialect == "sqlite":
        source_path = _sqlite_path(url)
        if not source_path.exists():
            raise BackupError(f"No SQLite database at {source_path}.")
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        destination = sqlite3.connect(partial)
        try:
            with destination:
                source.backup(destination)  # online: consistent even while others write
        finally:
            destination.close()
            source.close()
    else:
        _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--file={partial}",
              f"--dbname={_libpq_url(url)}"], "pg_dump")  # fmt: skip
    os.replace(partial, dump)

    engine = sa.create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            judgments = conn.execute(sa.text("SELECT count(*) FROM judgment")).scalar()
        artifacts = list_artifacts(engine, data_dir)
    finally:
        engine.dispose()
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "dialect": dialect,
        "schema_revision": revision,
        "database": {"file": dump.name, "size": dump.stat().st_size, "sha256": sha256_file(dump)},
        "counts": {"judgments": judgments},
        "data_dir": str(data_dir.resolve()),
        "artifacts": artifacts,
    }
    manifest_tmp = target / (MANIFEST + ".partial")
    manifest_tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(manifest_tmp, target / MANIFEST)
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# restore


def read_manifest(source: Path) -> dict:
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(f"{source} is not a Rankforge backup (no {MANIFEST}).")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"Unknown backup format {manifest.get('format_version')!r}.")
    return manifest


def _has_tables(url: str) -> bool:
    engine = sa.create_engine(url, hide_parameters=True)
    try:
        return bool(sa.inspect(engine).get_table_names())
    except sa.exc.OperationalError as error:
        raise BackupError(f"Cannot reach the target database: {type(error.orig).__name__}.") from error
    finally:
        engine.dispose()


def restore(url: str, data_dir: Path, source: Path, *, force: bool = False) -> tuple[dict, ArtifactCheck]:
    """Load the backup in `source` into `url` (verified first); then check the artifact store against it."""
    manifest = read_manifest(source)
    dialect = _dialect(url)
    if manifest["dialect"] != dialect:
        raise BackupError(f"This is a {manifest['dialect']} backup; RANKFORGE_DATABASE_URL is {dialect}. "
                          "Restore into the same kind of database.")  # fmt: skip
    dump = source / manifest["database"]["file"]
    if not dump.is_file() or sha256_file(dump) != manifest["database"]["sha256"]:
        raise BackupError(f"{dump} is missing or does not match the sha256 in the manifest: the backup is damaged.")
    if dialect == "sqlite":
        target_path = _sqlite_path(url)
        if target_path.exists() and target_path.stat().st_size and _has_tables(url) and not force:
            raise BackupError(f"{target_path} already holds a database; restore into a new one, or pass --force "
                              "to replace it.")  # fmt: skip
        target_path.parent.mkdir(parents=True, exist_ok=True)
        backup_db = sqlite3.connect(f"file:{dump}?mode=ro", uri=True)
        destination = sqlite3.connect(target_path)
        try:
            with destination:
                backup_db.backup(destination)  # replaces the whole target, pages and all
        finally:
            destination.close()
            backup_db.close()
    else:
        exists = _has_tables(url)
        if exists and not force:
            raise BackupError("The target PostgreSQL database is not empty; restore into a new database, or pass "
                              "--force to drop and replace what the backup holds.")  # fmt: skip
        command = [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
                   f"--dbname={_libpq_url(url)}"]  # fmt: skip
        if exists:
            command += ["--clean", "--if-exists"]
        _run([*command, str(dump)], "pg_restore")
    return manifest, verify_artifacts(manifest, data_dir)


# ---------------------------------------------------------------------------------------------------------------
# through the artifact store (any fsspec URL)


def default_location() -> str:
    """Where `rankforge db backup` without a target writes: the configured store's backups/<UTC time>."""
    return get_store().location("backups", datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))


def backup_to_store(url: str, data_dir: Path, location: str) -> dict:
    """A backup of `url` published at `location` (an fsspec URL): written in this machine's scratch, then
    uploaded file by file, the store manifest last (until then nothing is a backup there). The manifest;
    BackupError with the store's message when the store refuses (nothing is left visible)."""
    target = open_location(location)
    try:
        taken = target.exists()
    except StoreError as error:
        raise BackupError(f"Cannot write the backup to {location}: {error.detail}") from error
    if taken:
        raise BackupError(f"{location} holds a backup already: choose a new location for the backup.")
    work = Path(tempfile.mkdtemp(prefix=".backup-", dir=get_store().scratch("backups")))
    try:
        manifest = backup(url, data_dir, work / "backup")
        try:
            get_store().publish(work / "backup", location, keep_as_cache=False)
        except StoreError as error:
            raise BackupError(f"The backup was not written: {error.detail}") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def fetch_backup(location: str, into: Path) -> Path:
    """A backup in the store copied into the local directory `into` (each file streamed, checked against its
    sha256 in the store manifest). A location without a store manifest (a backup still being written, cut off, or
    none at all) is refused: BackupError."""
    artifact = open_location(location)
    try:
        files = artifact.manifest()["files"]
    except ArtifactNotFound:
        raise BackupError(f"{location} is not a complete Rankforge backup (no {STORE_MANIFEST}: nothing was "
                          "published there, or its upload did not finish).") from None  # fmt: skip
    except StoreError as error:
        raise BackupError(f"Cannot read the backup at {location}: {error.detail}") from error
    if MANIFEST not in files:
        raise BackupError(f"{location} is not a Rankforge backup (no {MANIFEST}).")
    into.mkdir(parents=True, exist_ok=True)
    for name, entry in files.items():
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        try:
            with open(path, "wb") as out:
                for chunk in artifact.stream(name):
                    digest.update(chunk)
                    out.write(chunk)
        except (StoreError, ArtifactNotFound) as error:
            raise BackupError(f"Reading {location}/{name}: {error.detail}") from error
        if digest.hexdigest() != entry["sha256"]:
            raise BackupError(f"{location}/{name} does not match the sha256 in its store manifest: the backup is "
                              "damaged.")  # fmt: skip
    return into


def restore_from(url: str, data_dir: Path, source: str, *, force: bool = False) -> tuple[dict, ArtifactCheck]:
    """`restore` from a local directory or a backup in a store (`source` an fsspec URL: fetched first into a
    temporary directory of this machine's scratch, removed afterwards)."""
    if not is_url(source):
        return restore(url, data_dir, Path(source), force=force)
    work = Path(tempfile.mkdtemp(prefix=".restore-", dir=get_store().scratch("backups")))
    try:
        return restore(url, data_dir, fetch_backup(source, work / "backup"), force=force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
