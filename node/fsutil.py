"""Durable file operations: the temp file, fsync, rename, fsync-the-directory order; and the
private mode every folder of a data directory gets."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700  # as PostgreSQL's data directory: the node's user alone


def private_dirs(path: Path) -> None:
    """`path` and its missing parents, each 0700 (mkdir's `parents=True` would give the parents
    the umask's mode, typically 0755)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    fsync_dir(path.parent)
