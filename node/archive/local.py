"""A directory as an object store (file:///path): for tests, and for an NFS mount.

Each object has a sidecar `<name>.sha256` holding its digest. A write goes to a temporary file
under `.incoming/`, then is hard-linked into place: os.link fails on an existing name, so a write
is create-only and the object appears whole or not at all. The sidecar is linked first, so a
reader never finds an object without its digest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .store import (
    HASH_CHUNK_BYTES,
    ArchiveError,
    IntegrityError,
    ObjectExists,
    ObjectInfo,
    ObjectMissing,
    Source,
    check_name,
)

DIGEST_SUFFIX = ".sha256"
INCOMING = ".incoming"


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def _path(self, name: str) -> Path:
        check_name(name)
        if name.endswith(DIGEST_SUFFIX) or name.split("/")[0] == INCOMING:
            raise ArchiveError(f"bad object name {name!r}: '{DIGEST_SUFFIX}' and '{INCOMING}/' are the store's own")
        return self.root / name

    def put(self, name: str, source: Source) -> str:
        path = self._path(name)
        try:
            return self._put(name, path, source)
        except OSError as exc:  # permissions, a full disk, a file system without hard links
            raise ArchiveError(f"writing {self.url}/{name} failed: {exc}") from exc

    def _put(self, name: str, path: Path, source: Source) -> str:
        incoming = self.root / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        temps: list[Path] = []
        try:
            temps.append(_write_temp(incoming, source))
            digest = _digest_file(temps[0])
            temps.append(_write_temp(incoming, digest.encode()))
            # The sidecar first: a reader never finds the object without its digest. A taken
            # object name with no sidecar is left by a writer that crashed between the two.
            for temp, final in ((temps[1], path.with_name(path.name + DIGEST_SUFFIX)), (temps[0], path)):
                try:
                    os.link(temp, final)
                except FileExistsError:
                    raise ObjectExists(f"{self.url}/{name} already exists; objects are never overwritten") from None
            _fsync_dir(path.parent)
        finally:
            for temp in temps:
                temp.unlink(missing_ok=True)
        return digest

    def get(self, name: str, dest: Path) -> str:
        path = self._path(name)
        expected = self._recorded_digest(name, path)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, HASH_CHUNK_BYTES)
            actual = _digest_file(tmp)
            if actual != expected:
                raise IntegrityError(f"{self.url}/{name}: SHA-256 is {actual}, recorded {expected}; not used")
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return actual

    def read(self, name: str) -> bytes:
        path = self._path(name)
        expected = self._recorded_digest(name, path)
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise IntegrityError(f"{self.url}/{name}: SHA-256 is {actual}, recorded {expected}; not used")
        return data

    def _recorded_digest(self, name: str, path: Path) -> str:
        try:
            return path.with_name(path.name + DIGEST_SUFFIX).read_text().strip()
        except FileNotFoundError:
            raise ObjectMissing(f"{self.url}/{name} does not exist") from None

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        if not self.root.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not (Path(dirpath) == self.root and d == INCOMING))
            for filename in sorted(filenames):
                if filename.endswith(DIGEST_SUFFIX):
                    continue
                path = Path(dirpath) / filename
                name = path.relative_to(self.root).as_posix()
                if name.startswith(prefix) and path.with_name(filename + DIGEST_SUFFIX).exists():
                    found.append(ObjectInfo(name, path.stat().st_size))
        return sorted(found, key=lambda info: info.name)  # S3's order: by name

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise ObjectMissing(f"{self.url}/{name} does not exist") from None
        path.with_name(path.name + DIGEST_SUFFIX).unlink(missing_ok=True)


def _write_temp(directory: Path, source: Source) -> Path:
    fd, name = tempfile.mkstemp(dir=directory)
    with os.fdopen(fd, "wb") as out:
        if isinstance(source, bytes):
            out.write(source)
        else:
            shutil.copyfileobj(source, out, HASH_CHUNK_BYTES)
        out.flush()
        os.fsync(out.fileno())
    return Path(name)


def _digest_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
