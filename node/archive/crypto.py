"""Client-side encryption of archived objects: `EncryptedStore` wraps any `ObjectStore`, so the
object store (and whoever can read the bucket) holds ciphertext only.

The archive key is 32 random bytes given out of band (`KVSTORE_ARCHIVE_KEY`, or a private key
file); objects are sealed with AES-256-GCM under a key derived from it (HKDF-SHA256, its own
`info`: the same secret may serve another purpose later). The key id, a hash of the secret, is
not secret: it goes into each object's header, `archive.json` and manifests, so a restore
given the wrong key says which one it needs.

An object is a header, then chunks of at most `chunk size` plaintext bytes (every chunk but the
last exactly that size):

    header  b"KVENC001" | key id (16 ASCII hex digits) | chunk size (u32, big-endian)
    chunk   nonce (12 random bytes) | ciphertext | GCM tag (16 bytes)

Each chunk's associated data is header | object name (UTF-8) | chunk index (u64, big-endian) |
final flag (1 byte, 1 on the last chunk only), so a chunk cannot be altered, reordered, dropped
or moved to another object, and an object cut at a chunk boundary is refused: its last chunk
was not sealed as the final one. An empty plaintext is one empty final chunk. Objects stream
through in chunks both ways, so a snapshot of gigabytes is never held in memory.

The SHA-256 the inner store records and checks is the ciphertext's; `put` and `get` return it.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..cluster_key import KEY_BYTES, decode_key
from ..fsutil import fsync_dir
from .store import ArchiveError, IntegrityError, ObjectInfo, ObjectStore, Source

KEY_ID_CHARS: Final = 16
MAGIC: Final = b"KVENC001"
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
CHUNK_BYTES: Final = 1 << 20
# A reader allocates a chunk before it can authenticate the header that gives its size.
MAX_CHUNK_BYTES: Final = 1 << 26
_CHUNK_SIZE = struct.Struct(">I")
_CHUNK_POSITION = struct.Struct(">QB")  # index, final flag
HEADER_BYTES: Final = len(MAGIC) + KEY_ID_CHARS + _CHUNK_SIZE.size
_KEY_ID_CONTEXT: Final = b"kvstore-archive-key-id\0"
_OBJECTS_INFO: Final = b"kvstore++ archive objects v1"


class ArchiveKeyError(ArchiveError):
    """No usable archive key, or not the key an object was encrypted with; says what to do."""


@dataclass(frozen=True, slots=True)
class ArchiveKey:
    secret: bytes = field(repr=False)
    key_id: str = field(init=False)  # not secret: names the key in headers, archive.json and manifests

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ArchiveKeyError(f"an archive key is {KEY_BYTES} bytes, not {len(self.secret)}")
        key_id = hashlib.sha256(_KEY_ID_CONTEXT + self.secret).hexdigest()[:KEY_ID_CHARS]
        object.__setattr__(self, "key_id", key_id)

    @classmethod
    def parse(cls, text: str, source: str) -> ArchiveKey:
        """32 bytes written as 64 hex digits or base64 (standard or URL-safe, padding optional)."""
        raw = decode_key(text)
        if raw is None:
            # Never echo the text: it is (meant to be) a secret.
            raise ArchiveKeyError(
                f"{source}: the archive key must be {KEY_BYTES} random bytes written as {2 * KEY_BYTES} hex digits "
                "or base64 (make one with: openssl rand -hex 32)"
            )
        return cls(raw)


def load_archive_key(key_file: Path | None, key_env: str | None) -> ArchiveKey | None:
    """The key in `key_env` (KVSTORE_ARCHIVE_KEY's value), else in `key_file`; None when neither is set."""
    if key_env:
        return ArchiveKey.parse(key_env, "KVSTORE_ARCHIVE_KEY")
    if key_file is None:
        return None
    try:
        mode = stat.S_IMODE(key_file.stat().st_mode)
        if mode & 0o077:  # refused as ssh refuses a private key others may read
            raise ArchiveKeyError(
                f"archive key file {key_file} is mode {mode:04o}: others may read it; "
                f"make it private with: chmod 600 {key_file}"
            )
        text = key_file.read_text(errors="replace")
    except OSError as error:
        raise ArchiveKeyError(f"archive key file {key_file}: {error.strerror}") from None
    return ArchiveKey.parse(text, f"archive key file {key_file}")


def is_encrypted(data_prefix: bytes) -> bool:
    """Whether an object starting with `data_prefix` (its first 8 bytes or more) is one of ours."""
    return data_prefix.startswith(MAGIC)


def encrypted_size(plain_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """The size of an object of `plain_bytes` once encrypted (a manifest states the plain size)."""
    chunks = max(1, -(-plain_bytes // chunk_bytes))
    return HEADER_BYTES + plain_bytes + chunks * (NONCE_BYTES + TAG_BYTES)


class EncryptedStore:
    """An `ObjectStore` that encrypts what it puts into `inner` and decrypts what it gets."""

    def __init__(self, inner: ObjectStore, key: ArchiveKey, chunk_bytes: int = CHUNK_BYTES) -> None:
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ArchiveError(f"chunk size {chunk_bytes}: use 1 to {MAX_CHUNK_BYTES} bytes")
        self.inner = inner
        self.url = inner.url
        self.chunk_bytes = chunk_bytes
        self._key = key
        derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_OBJECTS_INFO).derive(key.secret)
        self._aead = AESGCM(derived)

    @property
    def key_id(self) -> str:
        return self._key.key_id

    def put(self, name: str, source: Source) -> str:
        if isinstance(source, bytes):
            return self.inner.put(name, b"".join(self._encrypt(name, io.BytesIO(source))))
        try:
            with tempfile.TemporaryFile() as sealed:  # the system temp dir; gone when closed
                for piece in self._encrypt(name, source):
                    sealed.write(piece)
                sealed.seek(0)
                return self.inner.put(name, sealed)
        except OSError as exc:  # the temp dir full or not writable (TMPDIR picks another)
            raise ArchiveError(f"encrypting {self.url}/{name} in {tempfile.gettempdir()} failed: {exc}") from exc

    def get(self, name: str, dest: Path) -> str:
        temps: list[Path] = []
        try:
            for _ in range(2):  # the ciphertext, then the plaintext
                fd, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
                os.close(fd)
                temps.append(Path(temp_name))
            digest = self.inner.get(name, temps[0])
            with temps[0].open("rb") as sealed, temps[1].open("wb") as out:
                for plaintext in self._decrypt(name, sealed):
                    out.write(plaintext)
                out.flush()
                os.fsync(out.fileno())
            temps[1].replace(dest)
            fsync_dir(dest.parent)
        finally:
            for temp in temps:
                temp.unlink(missing_ok=True)
        return digest

    def read(self, name: str) -> bytes:
        return b"".join(self._decrypt(name, io.BytesIO(self.inner.read(name))))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def _encrypt(self, name: str, source: BinaryIO) -> Iterator[bytes]:
        """The header, then each chunk sealed; reads one chunk ahead to know which is the last."""
        header = MAGIC + self.key_id.encode("ascii") + _CHUNK_SIZE.pack(self.chunk_bytes)
        yield header
        current = _read_up_to(source, self.chunk_bytes)
        index = 0
        while True:
            following = _read_up_to(source, self.chunk_bytes) if len(current) == self.chunk_bytes else b""
            final = not following
            nonce = os.urandom(NONCE_BYTES)
            yield nonce + self._aead.encrypt(nonce, current, _associated(header, name, index, final))
            if final:
                return
            current = following
            index += 1

    def _decrypt(self, name: str, sealed: BinaryIO) -> Iterator[bytes]:
        """Each chunk's plaintext, once it authenticates; the last must be sealed as the final one."""
        where = f"{self.url}/{name}"
        header = _read_up_to(sealed, HEADER_BYTES)
        if not is_encrypted(header):
            raise ArchiveError(
                f"{where} is not encrypted: it was written without an archive key, and this store was given one"
            )
        if len(header) < HEADER_BYTES:
            raise IntegrityError(f"{where} is damaged or altered: its encryption header is cut short; not used")
        key_id = header[len(MAGIC) : len(MAGIC) + KEY_ID_CHARS].decode("ascii", errors="replace")
        if key_id != self.key_id:
            raise ArchiveKeyError(
                f"{where} is encrypted with archive key {key_id}, but the key given is {self.key_id}: "
                f"give the key whose id is {key_id} (KVSTORE_ARCHIVE_KEY or the archive key file)"
            )
        (chunk_bytes,) = _CHUNK_SIZE.unpack_from(header, len(MAGIC) + KEY_ID_CHARS)
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise IntegrityError(f"{where} is damaged or altered: its header's chunk size is {chunk_bytes}; not used")
        frame_bytes = NONCE_BYTES + chunk_bytes + TAG_BYTES
        frame = _read_up_to(sealed, frame_bytes)
        index = 0
        while True:
            following = _read_up_to(sealed, frame_bytes) if len(frame) == frame_bytes else b""
            final = not following
            plaintext = self._open(frame, _associated(header, name, index, final))
            if plaintext is None:
                raise IntegrityError(
                    f"{where} is damaged or altered (chunk {index} does not authenticate: changed, cut short, "
                    "or moved from another object); not used"
                )
            yield plaintext
            if final:
                return
            frame = following
            index += 1

    def _open(self, frame: bytes, associated: bytes) -> bytes | None:
        if len(frame) < NONCE_BYTES + TAG_BYTES:  # cut inside a chunk's nonce or tag
            return None
        try:
            return self._aead.decrypt(frame[:NONCE_BYTES], frame[NONCE_BYTES:], associated)
        except InvalidTag:
            return None


def _associated(header: bytes, name: str, index: int, final: bool) -> bytes:
    return header + name.encode() + _CHUNK_POSITION.pack(index, final)


def _read_up_to(source: BinaryIO, size: int) -> bytes:
    """`size` bytes, fewer only at the end (a pipe or socket may return less per read)."""
    data = source.read(size)
    if len(data) in (0, size):
        return data
    parts = [data]
    missing = size - len(data)
    while missing and (more := source.read(missing)):
        parts.append(more)
        missing -= len(more)
    return b"".join(parts)
