"""The artifact store: the one module through which snapshots, model versions, job files, uploads and backups
reach durable storage, a local directory (the default) or any fsspec URL (s3://, gs://, az://, ...).

Setting: `RANKFORGE_ARTIFACT_STORE` (app.config.Settings.artifact_store). Empty: the local directory
`RANKFORGE_DATA_DIR`, exactly as before (artifacts are written in place and published by one rename). A URL such as
`s3://bucket/prefix`: artifacts live there; the endpoint and credentials come from the environment as the fsspec
backend reads them (s3fs/botocore: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; gcsfs:
GOOGLE_APPLICATION_CREDENTIALS; adlfs: AZURE_STORAGE_CONNECTION_STRING ...). `RANKFORGE_DATA_DIR` then only holds
this machine's scratch: job working directories, the local cache of downloaded artifacts, secret.key.

Locations. An artifact is a directory-like tree under a *location*: a string that is either an absolute local
path or a full URL (`s3://bucket/prefix/models/demo-reward-7`). Database rows keep the location (snapshot.path,
model_version.path), so any process, on any machine, reads an artifact from its row alone (`open_location`),
whatever its own settings, given credentials for that store.

Visibility. An artifact is *published* when its store manifest (`STORE_MANIFEST`, `{"files": {name: {"sha256",
"bytes"}}, "sha256": overall}`) exists; `publish` uploads every file first and writes the manifest last, so a
reader never sees a half-written artifact: a write that fails, or a process killed mid-upload, leaves no manifest
(readers treat the location as absent; `publish` deletes what it had uploaded when it can). On a local store the
tree is written beside its final name and renamed into place (one step), and the manifest is added.

How jobs read and write through it (the worker, and launchers that run the trainer elsewhere, e.g. Ray):
    store = get_store()                               # from the settings
    out = store.location("models", name)              # where an output goes (a path or a URL)
    work = store.scratch("jobs", str(job_id))         # a local directory to write in (this machine)
    ... the child writes its output into a local dir `local_out` ...
    manifest = store.publish(local_out, out)          # files, then the manifest: visible now; StoreError if not
    local = open_location(row.path).local_copy()     # a child that needs local files (base model, dataset):
                                                       # a cached copy keyed by the manifest's sha256 (a local
                                                       # store returns the path itself, no copy)
Downloads (routes): `open_location(path).stream(name)` yields chunks (no whole file in memory); `presigned_url`
gives a short-lived URL where the backend can sign one (S3), else None (stream instead).
Single files (uploads): `put_file(local, location)` / `get_file(location, local)`, written to a temp name then
moved (local) or uploaded whole (object stores, where a PUT is atomic). Backups are artifacts (app.backup): the
dump and its backup manifest published together, the store manifest last.

The cache (`<data_dir>/cache/artifacts/<sha256>`, this machine's copies of remote artifacts) is capped at
RANKFORGE_CACHE_MAX_GB: `prune_cache` removes the least recently used entries (each use touches the entry's mtime)
until it fits, and never one in use: inside `cache_leases()` (the worker around each job, app.jobs.ray_entry
around its Ray job) every entry `local_copy` returns is held under a shared flock until the block ends, and
eviction takes the entry's exclusive lock without waiting (held: skipped), renames it away, then deletes it. It
runs after each write into the cache and on the worker's idle tick (app.worker). `.locations/<sha256>` remembers
the location an entry was copied from, so `publish_content_addressed` (a Ray job's inputs) names a model version or
snapshot by its own location instead of uploading it again.

Errors: `StoreError` (an app.errors.RankforgeError, 502) carries the backend's own message ("Access Denied",
"No space left on device", ...); `ArtifactNotFound` (404) for a location without a manifest.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from app.config import get_settings
from app.errors import NotFound, RankforgeError

STORE_MANIFEST = "_store_manifest.json"
"""Written last into every published artifact: its files with sha256 and bytes, and the overall sha256."""
CHUNK_BYTES = 1 << 20
CACHE_DIR = "cache/artifacts"
"""Under this machine's data_dir: local copies of remote artifacts, one directory per manifest sha256."""
_LEASES: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("rankforge_cache_leases", default=None)
"""The open descriptors (shared flocks) of the cache entries leased in the current `cache_leases()` block."""


class StoreError(RankforgeError):
    """The store refused or failed an operation; the message is the backend's own."""

    status_code = 502


class ArtifactNotFound(NotFound):
    """No published artifact (no store manifest) at a location."""


def is_url(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def _sha256_stream(handle) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := handle.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def overall_sha256(files: dict[str, dict]) -> str:
    """SHA-256 of the lines "<name>\\0<file sha256>\\n" over the files, sorted by name (as dataset manifests)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]['sha256']}\n".encode())
    return digest.hexdigest()


def local_manifest(directory: Path) -> dict:
    """The store manifest of a local directory's files (the manifest file itself not listed)."""
    files = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or path.name == STORE_MANIFEST and path.parent == directory:
            continue
        with open(path, "rb") as handle:
            sha, size = _sha256_stream(handle)
        files[path.relative_to(directory).as_posix()] = {"sha256": sha, "bytes": size}
    return {"files": files, "sha256": overall_sha256(files)}


def safe_name(name: str) -> str:
    """A plain relative file name inside an artifact, or NotFound (no '..', absolute paths, backslashes)."""
    if not name or "\0" in name or "\\" in name or PurePosixPath(name).is_absolute() \
            or any(part in ("", ".", "..") for part in name.split("/")):
        raise ArtifactNotFound(f"No file {name!r}.")
    return name


@dataclass(frozen=True)
class Artifact:
    """One published (or to be published) artifact at `location`, on filesystem `fs` (fsspec) at `path`."""

    location: str
    fs: Any
    path: str

    @property
    def local(self) -> bool:
        return not is_url(self.location)

    def _file(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{safe_name(name)}"

    def exists(self) -> bool:
        try:
            return bool(self.fs.exists(self._file(STORE_MANIFEST))) or (self.local and Path(self.path).is_dir())
        except Exception as error:  # noqa: BLE001 - a backend error is the store's message
            raise StoreError(f"artifact store: {error}") from error

    def manifest(self) -> dict:
        """The store manifest; a local directory published before manifests existed gets one computed."""
        try:
            with self.fs.open(self._file(STORE_MANIFEST), "rb") as handle:
                return json.loads(handle.read())
        except FileNotFoundError:
            if self.local and Path(self.path).is_dir():
                return local_manifest(Path(self.path))
            raise ArtifactNotFound(f"No artifact at {self.location}.") from None
        except Exception as error:  # noqa: BLE001
            raise StoreError(f"artifact store: {error}") from error

    def stream(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The bytes of one listed file, a chunk at a time."""
        with self.open_file(name) as handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk

    def open_file(self, name: str):
        """A file of the artifact opened for reading (binary, read as it goes: nothing is loaded whole). On an
        object store only a file its manifest lists (so never one of an unpublished write)."""
        if self.local:
            path = Path(self.path) / safe_name(name)
            if not path.is_file() or not path.resolve().is_relative_to(Path(self.path).resolve()):
                raise ArtifactNotFound(f"No file {name!r} in {self.location}.")
            return open(path, "rb")
        if name != STORE_MANIFEST and name not in self.manifest()["files"]:
            raise ArtifactNotFound(f"No file {name!r} in {self.location}.")
        try:
            return self.fs.open(self._file(name), "rb")
        except FileNotFoundError:
            raise ArtifactNotFound(f"No file {name!r} in {self.location}.") from None
        except Exception as error:  # noqa: BLE001
            raise StoreError(f"artifact store: {_reason(error)}") from error

    def presigned_url(self, name: str, expires_seconds: int = 3600) -> str | None:
        """A URL that fetches the file without credentials, where the backend signs URLs (S3); else None."""
        if self.local:
            return None
        try:
            return self.fs.sign(self._file(name), expiration=expires_seconds)
        except NotImplementedError:
            return None

    def local_copy(self) -> Path:
        """A local directory with the artifact's files: a local store's own directory, else a copy in this
        machine's cache keyed by the manifest's sha256 (downloaded once, beside its name, then renamed)."""
        if self.local:
            return Path(self.path)
        manifest = self.manifest()
        cache = Path(get_settings().data_dir).resolve() / CACHE_DIR
        final = cache / manifest["sha256"]
        if final.is_dir() and _use(final):
            _remember_location(final, self.location)
            return final
        cache.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{manifest['sha256']}.partial-", dir=cache))
        try:
            for name, entry in manifest["files"].items():
                target = partial / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with open(target, "wb") as out:
                    for chunk in self.stream(name):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != entry["sha256"]:
                    raise StoreError(f"{self.location}/{name} does not match its sha256 in the store manifest")
            with open(partial / STORE_MANIFEST, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle)
            try:
                os.rename(partial, final)
            except OSError:  # another process cached it meanwhile
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        if not _use(final):  # evicted in the instant between (a cap smaller than this artifact): fetch it again
            return self.local_copy()
        _remember_location(final, self.location)
        prune_cache(keep=final.name)
        return final

    def delete(self) -> None:
        """Manifest first (the artifact disappears at once), then the files."""
        try:
            if self.fs.exists(self._file(STORE_MANIFEST)):
                self.fs.rm(self._file(STORE_MANIFEST))
            if self.fs.exists(self.path):
                self.fs.rm(self.path, recursive=True)
        except FileNotFoundError:
            pass
        except Exception as error:  # noqa: BLE001
            raise StoreError(f"artifact store: {error}") from error


def local_path(location: str | os.PathLike | None) -> str | None:
    """A local directory for a location a row keeps (a base model, a dataset), for a child that reads files:
    the path itself when local, else the cached copy (downloaded once per content hash). None stays None."""
    if location is None:
        return None
    return str(location) if not is_url(location) else str(open_location(location).local_copy())


def open_location(location: str | os.PathLike) -> Artifact:
    """The artifact at a location a row keeps (a local path or a URL), on the filesystem the location names."""
    location = str(location)
    if is_url(location):
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        return Artifact(location, fs, path)
    from fsspec.implementations.local import LocalFileSystem

    path = str(Path(location).resolve())
    return Artifact(path, LocalFileSystem(), path)


class ArtifactStore:
    """Where new artifacts go: `root` is the configured store (a local directory or an fsspec URL)."""

    def __init__(self, root: str, data_dir: Path):
        self.root = root.rstrip("/") if is_url(root) else str(Path(root).resolve())
        self.data_dir = Path(data_dir).resolve()

    @property
    def local(self) -> bool:
        return not is_url(self.root)

    def location(self, *parts: str) -> str:
        """The location of a new artifact under the store's root."""
        for part in parts:
            safe_name(part)
        return "/".join([self.root, *parts]) if not self.local else str(Path(self.root, *parts))

    def scratch(self, *parts: str) -> Path:
        """A local working directory on this machine (created), e.g. a job's directory for its child."""
        path = self.data_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, local_dir: str | os.PathLike, location: str, *, keep_as_cache: bool = True) -> dict:
        """Make the files of `local_dir` the artifact at `location` and return its store manifest.

        Local store: `local_dir` is renamed to `location` (a no-op when they are the same) and the manifest
        added. Object store: every file is uploaded, then the manifest; on failure the uploaded files are removed
        (best effort) and StoreError carries the backend's message. Either way nothing is visible until done.
        After an upload `local_dir` becomes this machine's cached copy, unless `keep_as_cache` is False (a backup:
        then `local_dir` is left as it is, for the caller to remove)."""
        local_dir = Path(local_dir).resolve()
        manifest = local_manifest(local_dir)
        artifact = open_location(location)
        if artifact.local:
            target = Path(artifact.path)
            if target != local_dir:
                if target.exists():
                    raise StoreError(f"{target} exists already; not overwriting it.")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(local_dir, target)
            _write_json_atomic(target / STORE_MANIFEST, manifest)
            return manifest
        fs, base = artifact.fs, artifact.path.rstrip("/")
        try:
            if fs.exists(f"{base}/{STORE_MANIFEST}"):
                raise StoreError(f"{location} is already published; not overwriting it.")
            for name in manifest["files"]:
                fs.put_file(str(local_dir / name), f"{base}/{name}")
            with fs.open(f"{base}/{STORE_MANIFEST}", "wb") as handle:
                handle.write(json.dumps(manifest, sort_keys=True).encode())
        except StoreError:
            raise
        except Exception as error:  # noqa: BLE001 - the backend's message, whatever its class
            with contextlib.suppress(Exception):  # best effort: without a manifest nothing is visible anyway
                fs.rm(base, recursive=True)
            raise StoreError(f"artifact store refused the write to {location}: {_reason(error)}") from error
        if keep_as_cache:
            self._keep_as_cache(local_dir, manifest, location)
        return manifest

    def publish_content_addressed(self, source: str | os.PathLike, *parts: str) -> tuple[str, bool]:
        """Publish a local directory (or one file, as a directory holding it under its name) at
        `<parts>/<its manifest sha256>` unless an artifact is published there already: an unchanged input is
        uploaded once, whatever job uses it next. Returns (location, whether anything was uploaded). The source
        is left in place. A directory of this machine's cache is known by its name (verified when downloaded), and
        where it was copied from a location that still holds the same content (a model version, a snapshot), that
        location is returned and nothing is uploaded at all."""
        source = Path(source).resolve()
        cache = self.data_dir / CACHE_DIR
        if source.is_dir() and source.parent == cache and (source / STORE_MANIFEST).is_file():
            sha = json.loads((source / STORE_MANIFEST).read_text(encoding="utf-8"))["sha256"]
            origin = _remembered_location(source)
            if origin is not None:
                return origin, False
        else:
            sha = local_manifest(source)["sha256"] if source.is_dir() else overall_sha256(
                {source.name: {"sha256": _file_sha256(source)}})
        location = self.location(*parts, sha)
        if open_location(location).exists():
            return location, False
        staged = Path(tempfile.mkdtemp(prefix=".stage-", dir=self.scratch("jobs")))
        try:
            target = staged / "a"
            if source.is_dir():
                shutil.copytree(source, target, copy_function=_link_or_copy,
                                ignore=shutil.ignore_patterns(STORE_MANIFEST))  # fmt: skip
            else:
                target.mkdir()
                _link_or_copy(str(source), str(target / source.name))
            published = self.publish(target, location, keep_as_cache=False)
            if published["sha256"] != sha:  # the files changed while being read: not under this name
                open_location(location).delete()
                raise StoreError(f"{source} changed while it was being uploaded; try again.")
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return location, True

    def _keep_as_cache(self, local_dir: Path, manifest: dict, location: str) -> None:
        """After an upload, the local tree becomes this machine's cached copy (no download to read it back)."""
        cache = self.data_dir / CACHE_DIR
        cache.mkdir(parents=True, exist_ok=True)
        final = cache / manifest["sha256"]
        if final.exists():
            shutil.rmtree(local_dir, ignore_errors=True)
            return
        _write_json_atomic(local_dir / STORE_MANIFEST, manifest)
        try:
            os.rename(local_dir, final)
        except OSError:  # another file system: copy and forget the original
            shutil.copytree(local_dir, final, dirs_exist_ok=True)
            shutil.rmtree(local_dir, ignore_errors=True)
        _use(final)
        _remember_location(final, location)
        prune_cache(keep=final.name)

    def put_file(self, local_file: str | os.PathLike, location: str) -> None:
        """One file (an upload, a backup archive) to `location`, visible only when whole."""
        if not is_url(location):
            target = Path(location)
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
            shutil.copyfile(local_file, temp)
            os.replace(temp, target)
            return
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        try:
            fs.put_file(str(local_file), path)
        except Exception as error:  # noqa: BLE001
            raise StoreError(f"artifact store refused the write to {location}: {_reason(error)}") from error

    def get_file(self, location: str, local_file: str | os.PathLike) -> None:
        if not is_url(location):
            shutil.copyfile(location, local_file)
            return
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        try:
            fs.get_file(path, str(local_file))
        except FileNotFoundError:
            raise ArtifactNotFound(f"No file at {location}.") from None
        except Exception as error:  # noqa: BLE001
            raise StoreError(f"artifact store: {_reason(error)}") from error


def download_response(location: str | os.PathLike, name: str | None = None):
    """The HTTP response that sends one file: a local file as a FileResponse; a file of an object store streamed
    from it a chunk at a time (nothing whole in memory). `location` alone: a local file path."""
    from fastapi.responses import FileResponse, StreamingResponse

    if name is None:
        return FileResponse(location, filename=Path(location).name)
    artifact = open_location(location)
    if artifact.local:
        return FileResponse(Path(artifact.path) / safe_name(name), filename=PurePosixPath(name).name)
    chunks = artifact.stream(name)
    first = next(chunks, b"")  # a missing file is a 404 now, not a broken stream later

    def body() -> Iterator[bytes]:
        yield first
        yield from chunks

    filename = PurePosixPath(name).name.replace('"', "")
    return StreamingResponse(body(), media_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# ---------------------------------------------------------------------------------------------------------------
# the cache: leases and least-recently-used eviction


@contextlib.contextmanager
def cache_leases() -> Iterator[None]:
    """Every cache entry `local_copy` returns inside this block (this thread, this context) is held until the
    block ends: `prune_cache`, in this process or another, never removes it meanwhile (a shared flock)."""
    held: list[int] = []
    token = _LEASES.set(held)
    try:
        yield
    finally:
        _LEASES.reset(token)
        for fd in held:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor releases its flock


def _use(entry: Path) -> bool:
    """Mark a cache entry as just used (its mtime) and, inside `cache_leases()`, lease it. False when the entry is
    gone (evicted meanwhile): the caller fetches it again."""
    try:
        os.utime(entry)
    except FileNotFoundError:
        return False
    held = _LEASES.get()
    if held is None:
        return True
    try:
        fd = os.open(entry, os.O_RDONLY)
    except FileNotFoundError:
        return False
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while an eviction holds it (a rename), never for a job
    try:
        same = os.fstat(fd).st_ino == os.stat(entry).st_ino  # not renamed away by that eviction
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return False
    held.append(fd)
    return True


def _sidecar(entry: Path) -> Path:
    return entry.parent / ".locations" / entry.name


def _remember_location(entry: Path, location: str) -> None:
    """In the cache's `.locations/<sha256>`: the store location an entry is a copy of (best effort)."""
    if not is_url(location):
        return
    with contextlib.suppress(OSError):
        sidecar = _sidecar(entry)
        sidecar.parent.mkdir(exist_ok=True)
        if not sidecar.is_file() or sidecar.read_text(encoding="utf-8") != location:
            temp = sidecar.with_name(f".{sidecar.name}.partial-{secrets.token_hex(4)}")
            temp.write_text(location, encoding="utf-8")
            os.replace(temp, sidecar)


def _remembered_location(entry: Path) -> str | None:
    """The store location a cache entry was copied from, if that location still holds the same content."""
    try:
        location = _sidecar(entry).read_text(encoding="utf-8").strip()
        return location if is_url(location) and open_location(location).manifest()["sha256"] == entry.name else None
    except (OSError, ArtifactNotFound, StoreError, KeyError, ValueError):
        return None


def _entry_bytes(entry: Path) -> int:
    try:
        manifest = json.loads((entry / STORE_MANIFEST).read_text(encoding="utf-8"))
        return sum(int(info["bytes"]) for info in manifest["files"].values())
    except (OSError, ValueError, KeyError, TypeError):
        return sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())


def _evict(entry: Path) -> bool:
    """Remove one cache entry unless it is leased (a shared flock held by a running job): False then."""
    try:
        fd = os.open(entry, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        doomed = entry.with_name(f".evicted-{entry.name}-{secrets.token_hex(4)}")
        try:
            os.rename(entry, doomed)  # gone from its name at once; a reader waiting on the lock sees that
        except FileNotFoundError:
            return False
    finally:
        os.close(fd)
    shutil.rmtree(doomed, ignore_errors=True)
    with contextlib.suppress(OSError):
        _sidecar(entry).unlink()
    return True


def prune_cache(max_bytes: int | None = None, *, keep: str | None = None) -> list[str]:
    """Bring this machine's cache under `max_bytes` (default RANKFORGE_CACHE_MAX_GB): the least recently used
    entries go first; a leased entry (in use by a running job) and `keep` (the entry just written) stay, even over
    the cap. Returns the removed entries' names (their sha256)."""
    settings = get_settings()
    cap = int(settings.cache_max_gb * 2**30) if max_bytes is None else max_bytes
    cache = Path(settings.data_dir).resolve() / CACHE_DIR
    if not cache.is_dir():
        return []
    entries = []
    for entry in cache.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            entries.append((entry.stat().st_mtime, entry.name, _entry_bytes(entry), entry))
        except FileNotFoundError:
            continue
    total = sum(size for _, _, size, _ in entries)
    removed = []
    for _, name, size, entry in sorted(entries, key=lambda e: (e[0], e[1])):  # least recently used first
        if total <= cap:
            break
        if name != keep and _evict(entry):
            total -= size
            removed.append(name)
    return removed


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return _sha256_stream(handle)[0]


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _write_json_atomic(path: Path, value: dict) -> None:
    temp = path.with_name(f".{path.name}.partial-{secrets.token_hex(4)}")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


@lru_cache(maxsize=4)
def _store(root: str, data_dir: str) -> ArtifactStore:
    return ArtifactStore(root, Path(data_dir))


def get_store() -> ArtifactStore:
    """The configured store: RANKFORGE_ARTIFACT_STORE, else the local RANKFORGE_DATA_DIR."""
    settings = get_settings()
    return _store(settings.artifact_store or str(settings.data_dir), str(settings.data_dir))
