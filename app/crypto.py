"""Secrets at rest: webhook signing secrets and endpoint keys are stored encrypted, so a copied database file,
its WAL or a backup reveals none of them.

The key comes from `RANKFORGE_SECRET_KEY` (any string of at least 32 characters, e.g. the output of
`python -c "import secrets; print(secrets.token_urlsafe(32))"`). A comma-separated list rotates keys: the first
encrypts, every one of them decrypts. Unset (the embedded default), a random key is generated once into
`<data dir>/secret.key`, mode 0600, and read from there afterwards; keep that file out of database backups.

Stored values look like `enc:v1:<Fernet token>` (AES-128-CBC + HMAC-SHA256, from `cryptography`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import get_settings
from app.errors import SecretKeyError

PREFIX = "enc:v1:"
KEY_FILE_NAME = "secret.key"
MIN_KEY_CHARS = 32

_lock = threading.Lock()
_cache: dict[tuple[str | None, str], MultiFernet] = {}


def encrypt_secret(plain: str) -> str:
    """`plain` -> `enc:v1:...`, safe to store. Each call gives a different token (random IV)."""
    return PREFIX + _fernet().encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt_secret(token: str) -> str:
    """The plain text of a value written by encrypt_secret; SecretKeyError if the key is not the one it was
    encrypted with (or the value is not an encrypted secret)."""
    if not is_encrypted(token):
        raise SecretKeyError("the stored value is not an encrypted secret")
    try:
        return _fernet().decrypt(token[len(PREFIX):].encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError) as error:
        raise SecretKeyError(
            "a stored secret cannot be decrypted with RANKFORGE_SECRET_KEY (wrong or rotated key?)") from error


def is_encrypted(value: str | None) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _fernet() -> MultiFernet:
    settings = get_settings()
    cache_key = (settings.secret_key, str(settings.data_dir))
    with _lock:
        if cache_key not in _cache:
            raw_keys = _configured_keys(settings.secret_key) if settings.secret_key else [
                _key_from_file(Path(settings.data_dir) / KEY_FILE_NAME)]
            _cache[cache_key] = MultiFernet([Fernet(_derive(raw)) for raw in raw_keys])
        return _cache[cache_key]


def _configured_keys(value: str) -> list[str]:
    keys = [key.strip() for key in value.split(",") if key.strip()]
    if not keys:
        raise SecretKeyError("RANKFORGE_SECRET_KEY is empty")
    for key in keys:
        if len(key) < MIN_KEY_CHARS:
            raise SecretKeyError(f"RANKFORGE_SECRET_KEY: each key needs at least {MIN_KEY_CHARS} characters")
    return keys


def _derive(raw: str) -> bytes:
    """Any string -> a Fernet key (32 bytes, url-safe base64). The input is already random, so one hash is
    enough; no password stretching needed."""
    return base64.urlsafe_b64encode(hashlib.sha256(b"rankforge-secret-key:" + raw.encode("utf-8")).digest())


def _key_from_file(path: Path) -> str:
    """Read the generated key, or create it (exclusively, 0600, in a 0700 directory) on first use."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written whole to a private temporary name, then linked into place: a concurrent reader never sees a
    # half-written key, and if two processes race, the first link wins and both use that key.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48) + "\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return _read_key(path)


def _read_key(path: Path) -> str:
    key = path.read_text().strip()
    if len(key) < MIN_KEY_CHARS:
        raise SecretKeyError(f"{path}: the generated secret key is damaged (set RANKFORGE_SECRET_KEY or remove it)")
    return key
