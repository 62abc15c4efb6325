"""Flushing written files and directories to disk: a file or directory renamed into place after this is
durable. Shared by the trainer (job outputs) and the app (dataset snapshot files); imports nothing heavy."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's content, or a directory's entries (a new or renamed name in it), to disk."""
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
