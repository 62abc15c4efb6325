"""Dataset snapshot directories: streaming, deterministic, content-hashed, atomically published.

A snapshot directory holds, per split (``train``, ``test``): ``<split>.jsonl`` and/or ``<split>.parquet``,
optionally ``hf/`` (a Hugging Face ``datasets`` ``save_to_disk`` directory), and ``manifest.json``:
``{"rows": {split: n}, "files": {name: {"sha256", "bytes"}}, "sha256": overall, ...manifest_extra}``.

- Rows stream to JSONL as they come (canonical JSON: sorted keys, no spaces, UTF-8, by orjson), so memory
  does not grow with the number of rows.
- Parquet and ``hf/`` are built in `SnapshotWriter.finish` from those JSONL files, batch by batch. With a
  ``schema`` (exports pass the one of their format), Arrow's own JSON reader parses the files straight into
  that schema, in C++; a row with a column the schema lacks fails the snapshot. Without one, the schema is
  unified over all rows of all splits first (a second streaming pass in Python), so a column that is null
  in the first rows and set later (e.g. a model name) works, and train and test share one schema.
- Same rows in the same order give byte-identical files and the same overall hash: no timestamps or
  random ids go into any file (the ``hf/`` fingerprint is derived from the data's hash).
- Everything is written into a sibling temp directory, fsynced, and renamed to its final name in one
  step; a failure part-way leaves nothing under the final name.

The overall ``sha256`` is the SHA-256 of the lines ``"<name>\\0<file sha256>\\n"`` over every listed file,
sorted by name (``manifest.json`` itself is not listed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from app.errors import RankforgeError
from trainer.durable import fsync_path

MANIFEST_NAME = "manifest.json"
FILE_FORMATS = ("jsonl", "parquet")
DEFAULT_SPLITS = ("train", "test")
RESERVED_MANIFEST_KEYS = ("rows", "files", "sha256")
SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
HASH_CHUNK_BYTES = 1 << 20
JSONL_BUFFER_BYTES = 1 << 20
ARROW_JSON_BLOCK_BYTES = 1 << 20
"""Bytes of JSONL that Arrow's reader parses at a time (larger blocks cost more memory, not less time)."""
PARQUET_ROW_GROUP_ROWS = 65536
"""Rows per Parquet row group when Arrow parses the JSONL: blocks are gathered up to this many rows."""


class SnapshotTamperedError(Exception):
    """A snapshot file does not match its manifest (changed, missing, or unlisted)."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"snapshot file {name!r} {reason}")


class UnsafeSnapshotPathError(ValueError):
    """A requested file name tries to leave the snapshot directory."""


class SnapshotFileNotFoundError(FileNotFoundError):
    """A requested file name is not one of the snapshot's files."""


def canonical_json_line(value: Any) -> bytes:
    """The one JSONL line for a value, UTF-8 encoded: sorted keys, no whitespace, characters as is, floats in
    their shortest round-trip form, then a newline. orjson writes NaN and infinities as null: rows should not
    carry them."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def _append_file(source: Path, target) -> None:
    """Append a file's bytes to an open binary file (in the kernel where it can)."""
    target.flush()
    with open(source, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        copied = 0
        try:
            while copied < size:
                sent = os.copy_file_range(handle.fileno(), target.fileno(), size - copied)
                if sent == 0:
                    break
                copied += sent
        except OSError:
            if copied:  # part of it is there: a copy now would repeat it
                raise
        if copied < size:
            handle.seek(copied)
            shutil.copyfileobj(handle, target, 8 << 20)


class SnapshotWriter:
    """Write one snapshot: ``write(split, row)`` many times, then ``finish(...)`` or ``abort()``.

    Use as a context manager to abort on any exception (leaving the block without ``finish`` aborts too).
    """

    def __init__(
        self,
        final_dir: str | os.PathLike,
        *,
        formats: Iterable[str] = ("jsonl", "parquet"),
        hf_datasets: bool = False,
        splits: Iterable[str] = DEFAULT_SPLITS,
        parquet_batch_rows: int = 1000,
        schema: pa.Schema | None = None,
    ):
        self.final_dir = Path(final_dir)
        self.formats = tuple(formats)
        unknown = [name for name in self.formats if name not in FILE_FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"formats must be a non-empty subset of {FILE_FORMATS}, got {self.formats}")
        self.hf_datasets = hf_datasets
        self.splits = tuple(splits)
        for split in self.splits:
            if not SPLIT_NAME.match(split):
                raise ValueError(f"split names must match {SPLIT_NAME.pattern}, got {split!r}")
        if parquet_batch_rows < 1:
            raise ValueError("parquet_batch_rows must be >= 1")
        self.parquet_batch_rows = parquet_batch_rows
        self.schema = pa.schema(sorted(schema, key=lambda column: column.name)) if schema is not None else None
        if self.final_dir.exists():
            raise FileExistsError(f"snapshot directory already exists: {self.final_dir}")
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        # A dot-name next to the final directory: same filesystem (so rename is atomic), hidden from listings.
        self.temp_dir = Path(
            tempfile.mkdtemp(prefix=f".{self.final_dir.name}.partial-", dir=self.final_dir.parent)
        )
        self.temp_dir.chmod(
            0o755
        )  # mkdtemp makes it private; a published snapshot is readable like any artifact
        self.rows = dict.fromkeys(self.splits, 0)
        self._state = "open"
        # Large buffers: a million rows make a few hundred writes to the file, not one per 8 KiB.
        self._jsonl_files = {split: open(self._jsonl_path(split), "wb", buffering=JSONL_BUFFER_BYTES)  # noqa: SIM115
                             for split in self.splits}  # fmt: skip

    # -- writing rows

    def _jsonl_path(self, split: str) -> Path:
        # The JSONL stream is always written (Parquet and hf/ are built from it); when "jsonl" is not a
        # requested format it lives under a scratch name and is removed before publishing.
        name = f"{split}.jsonl" if "jsonl" in self.formats else f".{split}.rows.jsonl"
        return self.temp_dir / name

    def write(self, split: str, row: dict[str, Any]) -> None:
        """One row (its canonical line)."""
        if self._state != "open":
            raise RuntimeError(f"snapshot writer is {self._state}")
        if split not in self._jsonl_files:
            raise ValueError(f"unknown split {split!r}; this writer has {', '.join(self.splits)}")
        self._jsonl_files[split].write(canonical_json_line(row))
        self.rows[split] += 1

    def write_lines(self, split: str, data: bytes, rows: int) -> None:
        """`rows` canonical JSONL lines already made (`canonical_json_line`'s bytes, joined)."""
        if self._state != "open":
            raise RuntimeError(f"snapshot writer is {self._state}")
        self._jsonl_files[split].write(data)
        self.rows[split] += rows

    def append_jsonl(self, split: str, path: Path, rows: int) -> None:
        """Append a file of `rows` canonical JSONL lines (written by another process: app.datasets.export_parts)
        to the split's file."""
        if self._state != "open":
            raise RuntimeError(f"snapshot writer is {self._state}")
        _append_file(path, self._jsonl_files[split])
        self.rows[split] += rows

    def write_rows(self, split: str, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(split, row)

    # -- publishing

    def finish(self, manifest_extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Build Parquet / hf files, hash everything, write manifest.json, publish atomically."""
        if self._state != "open":
            raise RuntimeError(f"snapshot writer is {self._state}")
        manifest_extra = dict(manifest_extra or {})
        clashing = [key for key in RESERVED_MANIFEST_KEYS if key in manifest_extra]
        if clashing:
            raise ValueError(f"manifest_extra must not set {', '.join(clashing)}: the writer computes them")
        try:
            for handle in self._jsonl_files.values():
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            if "parquet" in self.formats or self.hf_datasets:
                schema = self.schema if self.schema is not None else self._unified_schema()
                if "parquet" in self.formats:
                    for split in self.splits:
                        self._write_parquet(split, schema)
                if self.hf_datasets:
                    self._write_hf_datasets(schema)
            if "jsonl" not in self.formats:
                for split in self.splits:
                    self._jsonl_path(split).unlink()
            files = {name: _file_digest(self.temp_dir / name) for name in _listed_files(self.temp_dir)}
            manifest = {
                **manifest_extra,
                "rows": dict(self.rows),
                "files": files,
                "sha256": overall_sha256(files),
            }
            _write_file_synced(
                self.temp_dir / MANIFEST_NAME,
                (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"),
            )
            for directory in sorted({self.temp_dir, *(p for p in self.temp_dir.rglob("*") if p.is_dir())}):
                fsync_path(directory)
            if self.final_dir.exists():
                raise FileExistsError(f"snapshot directory already exists: {self.final_dir}")
            os.rename(self.temp_dir, self.final_dir)
            fsync_path(self.final_dir.parent)
        except BaseException:
            self.abort()
            raise
        self._state = "finished"
        return manifest

    def abort(self) -> None:
        """Drop everything written so far; the final directory never appears."""
        for handle in self._jsonl_files.values():
            handle.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self._state = "aborted"

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._state == "open":
            self.abort()

    # -- derived files

    def _row_batches(self, split: str) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        with open(self._jsonl_path(split), "rb") as lines:
            for line in lines:
                batch.append(json.loads(line))
                if len(batch) >= self.parquet_batch_rows:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _unified_schema(self) -> pa.Schema:
        """One Arrow schema for all rows of all splits: union of columns, nulls and ints promoted."""
        schema = pa.schema([])
        for split in self.splits:
            for batch in self._row_batches(split):
                # pa.array infers a struct over the union of keys of every row in the batch
                batch_schema = pa.schema(list(pa.array(batch).type))
                try:
                    schema = pa.unify_schemas([schema, batch_schema], promote_options="permissive")
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    raise ValueError(f"rows disagree on a column's type (split {split}): {exc}") from exc
        return pa.schema(sorted(schema, key=lambda column: column.name))

    def _tables(self, split: str, schema: pa.Schema) -> Iterator[pa.Table]:
        if self.schema is None:
            for batch in self._row_batches(split):
                yield pa.Table.from_pylist(batch, schema=schema)
            return
        if self.rows[split] == 0:
            return
        reader = pa_json.open_json(
            self._jsonl_path(split),
            read_options=pa_json.ReadOptions(block_size=ARROW_JSON_BLOCK_BYTES),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
        )
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        try:
            for batch in reader:
                pending.append(batch)
                pending_rows += batch.num_rows
                if pending_rows >= PARQUET_ROW_GROUP_ROWS:
                    yield pa.Table.from_batches(pending).select(schema.names).cast(schema)
                    pending, pending_rows = [], 0
            if pending:
                yield pa.Table.from_batches(pending).select(schema.names).cast(schema)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"rows do not fit the snapshot's schema (split {split}): {exc}") from exc

    def _write_parquet(self, split: str, schema: pa.Schema) -> None:
        path = self.temp_dir / f"{split}.parquet"
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for table in self._tables(split, schema):
                writer.write_table(table)
        fsync_path(path)

    def _write_hf_datasets(self, schema: pa.Schema) -> None:
        """hf/: a `datasets.DatasetDict.save_to_disk` directory, made by `python -m trainer.hf_dataset` in a child
        process from Arrow streams written here (neither the web process nor the worker imports HF datasets)."""
        from app.jobs.child import python_executable, run_captured

        scratch = Path(tempfile.mkdtemp(prefix=".hf-build-", dir=self.temp_dir))
        try:
            command = [python_executable(), "-m", "trainer.hf_dataset", str(self.temp_dir / "hf")]
            for split in self.splits:
                arrow_path = scratch / f"{split}.arrow"
                with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as stream:
                    for table in self._tables(split, schema):
                        stream.write_table(table)
                fingerprint = _sha256_file(self._jsonl_path(split))[:16]
                command.append(f"{split}={arrow_path}:{fingerprint}")
            try:
                run_captured(command, timeout=3600)
            except RankforgeError as error:
                raise RuntimeError(f"hf_datasets=True: {error.detail} (is the 'datasets' package installed? "
                                   "pip install 'rankforge[train]')") from error  # fmt: skip
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# Hashing, verifying, serving


def overall_sha256(files: dict[str, dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]['sha256']}\n".encode())
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _file_digest(path: Path) -> dict[str, Any]:
    fsync_path(path)
    return {"sha256": _sha256_file(path), "bytes": path.stat().st_size}


def _listed_files(directory: Path) -> list[str]:
    """Relative POSIX names of every regular file under directory except the manifest, sorted."""
    names = [
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and not path.is_symlink()
    ]
    return sorted(name for name in names if name != MANIFEST_NAME)


def _write_file_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_manifest(snapshot_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(snapshot_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SnapshotTamperedError(MANIFEST_NAME, "is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SnapshotTamperedError(MANIFEST_NAME, f"is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise SnapshotTamperedError(MANIFEST_NAME, "has no 'files' table")
    return manifest


def verify_snapshot(snapshot_dir: str | os.PathLike) -> dict[str, Any]:
    """Recompute every file's hash and size and the overall hash; raise naming the first bad file."""
    directory = Path(snapshot_dir)
    manifest = read_manifest(directory)
    listed = manifest["files"]
    for name in sorted(listed):
        path = directory / name
        if not path.is_file() or path.is_symlink():
            raise SnapshotTamperedError(name, "is missing")
        expected = listed[name]
        if path.stat().st_size != expected.get("bytes") or _sha256_file(path) != expected.get("sha256"):
            raise SnapshotTamperedError(name, "does not match its sha256 in the manifest")
    for name in _listed_files(directory):
        if name not in listed:
            raise SnapshotTamperedError(name, "is not listed in the manifest")
    if overall_sha256(listed) != manifest.get("sha256"):
        raise SnapshotTamperedError(MANIFEST_NAME, "has an overall sha256 that does not match its files")
    return manifest


def safe_snapshot_file(snapshot_dir: str | os.PathLike, name: str) -> Path:
    """Path of a file the snapshot lists (or its manifest.json), refusing anything that could escape it."""
    if not name or "\0" in name or "\\" in name:
        raise UnsafeSnapshotPathError(f"invalid snapshot file name {name!r}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
        raise UnsafeSnapshotPathError(f"snapshot file names must be plain relative names, got {name!r}")
    directory = Path(snapshot_dir).resolve()
    if name != MANIFEST_NAME and name not in read_manifest(directory)["files"]:
        raise SnapshotFileNotFoundError(f"snapshot has no file {name!r}")
    path = (directory / pure).resolve()
    if not path.is_relative_to(directory):  # e.g. a symlink planted inside the snapshot
        raise UnsafeSnapshotPathError(f"snapshot file {name!r} resolves outside the snapshot")
    return path
