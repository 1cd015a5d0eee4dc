"""The one small interface every object store implements, and `open_store` to pick one by URL.

Objects are written create-only (a second upload of a name is refused, never overwrites), never
visible half-written, and read back checked against the SHA-256 recorded when they were written.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

HASH_CHUNK_BYTES = 1 << 20


class ArchiveError(Exception):
    """The object store refused or failed an operation; the message says which object and why."""


class ObjectExists(ArchiveError):
    """A create-only write found the name taken."""


class ObjectMissing(ArchiveError):
    pass


class IntegrityError(ArchiveError):
    """A downloaded object's SHA-256 is not the one recorded when it was written."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    name: str  # relative to the store's prefix
    size: int


Source = bytes | BinaryIO  # a file opened for reading in binary, read from its current position


class ObjectStore(Protocol):
    url: str

    def put(self, name: str, source: Source) -> str:
        """Write `name` create-only; returns the SHA-256 (hex) of what was written."""
        ...

    def get(self, name: str, dest: Path) -> str:
        """Download `name` to `dest` (atomically), check its recorded SHA-256; returns it."""
        ...

    def read(self, name: str) -> bytes:
        """A small object's bytes (a manifest), checked as `get` checks."""
        ...

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """The objects whose names start with `prefix`, sorted by name."""
        ...

    def delete(self, name: str) -> None: ...


def sha256_of(source: Source) -> str:
    """The digest of `source`; a file is read from its current position, then rewound there."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    start = source.tell()
    digest = hashlib.sha256()
    while chunk := source.read(HASH_CHUNK_BYTES):
        digest.update(chunk)
    source.seek(start)
    return digest.hexdigest()


def check_name(name: str) -> str:
    """Names are relative, '/'-separated, with no empty, '.' or '..' part: they cannot leave the prefix."""
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts):
        raise ArchiveError(f"bad object name {name!r}: use relative names like 'snapshots/a/b'")
    return name


def open_store(url: str) -> ObjectStore:
    """`s3://bucket[/prefix]` (credentials and endpoint from the AWS_* environment) or `file:///absolute/path`."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        from .local import LocalStore

        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ArchiveError(f"{url!r}: a file URL is file:///absolute/path (no host, query or fragment)")
        path = parts.path
        if not path.startswith("/") or any(part in (".", "..") for part in path.split("/")):
            raise ArchiveError(f"{url!r}: a file URL needs an absolute path without '.' or '..' parts")
        return LocalStore(Path(os.path.normpath(path)))
    if parts.scheme == "s3":
        from .s3 import S3Store

        if not parts.netloc or parts.query or parts.fragment:
            raise ArchiveError(f"{url!r}: an S3 URL is s3://bucket/optional/prefix (no query or fragment)")
        prefix = parts.path.strip("/")
        if prefix:
            check_name(prefix)
        return S3Store(parts.netloc, prefix)
    raise ArchiveError(f"{url!r}: unsupported object store URL; use s3://bucket/prefix or file:///absolute/path")
