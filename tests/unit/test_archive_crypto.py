"""Archive encryption (node/archive/crypto.py) over the file:// store: round trips, and every way
an object can be wrong (another key, plain, altered, cut short, renamed); archive key parsing."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from kvstore.node.archive.crypto import (
    HEADER_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    ArchiveKey,
    ArchiveKeyError,
    EncryptedStore,
    is_encrypted,
    load_archive_key,
)
from kvstore.node.archive.local import LocalStore
from kvstore.node.archive.store import ArchiveError, IntegrityError, sha256_of

CHUNK = 64  # small chunks: several per object, fast
SECRET = bytes(range(32))
KEY = ArchiveKey(SECRET)
FRAME = NONCE_BYTES + CHUNK + TAG_BYTES


def stores(tmp_path: Path, key: ArchiveKey = KEY) -> tuple[LocalStore, EncryptedStore]:
    inner = LocalStore(tmp_path / "archive")
    return inner, EncryptedStore(inner, key, chunk_bytes=CHUNK)


def replace_object(inner: LocalStore, name: str, data: bytes) -> None:
    """Swap an object's bytes as someone with write access to the bucket could: the store's own
    SHA-256 then matches, and only the encryption can tell."""
    inner.delete(name)
    inner.put(name, data)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK, 3 * CHUNK + 5])
def test_bytes_round_trip(tmp_path: Path, size: int) -> None:
    inner, store = stores(tmp_path)
    plaintext = os.urandom(size)
    digest = store.put("wal/a", plaintext)
    sealed = inner.read("wal/a")
    assert digest == sha256_of(sealed)  # the store's digest is the ciphertext's
    assert is_encrypted(sealed) and (size < 8 or plaintext not in sealed)
    chunks = max(1, -(-size // CHUNK))  # an empty plaintext is one empty final chunk
    assert len(sealed) == HEADER_BYTES + size + chunks * (NONCE_BYTES + TAG_BYTES)
    assert store.read("wal/a") == plaintext
    assert store.list("wal/") == inner.list("wal/") and store.list()[0].size == len(sealed)


def test_file_round_trip_streams_from_the_current_position(tmp_path: Path) -> None:
    inner, store = stores(tmp_path)
    plaintext = os.urandom(10 * CHUNK + 7)
    source_path = tmp_path / "snapshot.chk"
    source_path.write_bytes(b"skipped" + plaintext)
    with source_path.open("rb") as source:
        source.seek(len(b"skipped"))
        digest = store.put("snapshots/s/snapshot.chk", source)
    dest = tmp_path / "restored" / "snapshot.chk"
    dest.parent.mkdir()
    assert store.get("snapshots/s/snapshot.chk", dest) == digest
    assert dest.read_bytes() == plaintext
    assert os.listdir(dest.parent) == ["snapshot.chk"]  # no temporary file left beside it
    assert store.key_id == KEY.key_id and store.url == inner.url


def test_another_key_is_refused_naming_both_ids(tmp_path: Path) -> None:
    _, store = stores(tmp_path)
    store.put("archive.json", b"{}")
    other = ArchiveKey(bytes(32))
    _, wrong = stores(tmp_path, other)
    with pytest.raises(ArchiveKeyError, match=f"encrypted with archive key {KEY.key_id}.*key given is {other.key_id}"):
        wrong.read("archive.json")
    dest = tmp_path / "out"
    with pytest.raises(ArchiveKeyError):
        wrong.get("archive.json", dest)
    assert not dest.exists() and os.listdir(tmp_path) == ["archive"]


def test_a_plain_object_is_not_read_as_encrypted(tmp_path: Path) -> None:
    inner, store = stores(tmp_path)
    inner.put("archive.json", b'{"format_version": 1}')
    inner.put("empty", b"")
    for name in ("archive.json", "empty"):
        with pytest.raises(ArchiveError, match="is not encrypted"):
            store.read(name)


def test_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    inner, store = stores(tmp_path)
    store.put("wal/a", os.urandom(3 * CHUNK))
    sealed = bytearray(inner.read("wal/a"))
    for position in (HEADER_BYTES + 2, HEADER_BYTES + FRAME + 20, len(sealed) - 1, HEADER_BYTES - 1):
        altered = sealed.copy()
        altered[position] ^= 0x01
        replace_object(inner, "wal/a", bytes(altered))
        with pytest.raises(IntegrityError, match="wal/a is damaged or altered"):
            store.read("wal/a")


def test_a_dropped_last_chunk_is_refused(tmp_path: Path) -> None:
    inner, store = stores(tmp_path)
    store.put("wal/a", os.urandom(3 * CHUNK))
    sealed = inner.read("wal/a")
    for end in (HEADER_BYTES + 2 * FRAME, HEADER_BYTES + FRAME, HEADER_BYTES, HEADER_BYTES - 3, len(sealed) - 1):
        replace_object(inner, "wal/a", sealed[:end])
        with pytest.raises(IntegrityError, match="damaged or altered"):
            store.read("wal/a")
        with pytest.raises(IntegrityError):
            store.get("wal/a", tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_reordered_chunks_are_refused(tmp_path: Path) -> None:
    inner, store = stores(tmp_path)
    store.put("wal/a", os.urandom(3 * CHUNK))
    sealed = inner.read("wal/a")
    first, second = sealed[HEADER_BYTES : HEADER_BYTES + FRAME], sealed[HEADER_BYTES + FRAME : HEADER_BYTES + 2 * FRAME]
    replace_object(inner, "wal/a", sealed[:HEADER_BYTES] + second + first + sealed[HEADER_BYTES + 2 * FRAME :])
    with pytest.raises(IntegrityError):
        store.read("wal/a")


def test_an_object_moved_to_another_name_is_refused(tmp_path: Path) -> None:
    inner, store = stores(tmp_path)
    store.put("wal/00000001-0000000000000000-0000000000000100", os.urandom(2 * CHUNK))
    inner.put("wal/00000001-0000000000000100-0000000000000200", inner.read(store.list()[0].name))
    with pytest.raises(IntegrityError, match="0100-0000000000000200 is damaged or altered"):
        store.read("wal/00000001-0000000000000100-0000000000000200")


def test_key_id_and_repr() -> None:
    assert KEY.key_id == hashlib.sha256(b"kvstore-archive-key-id\0" + SECRET).hexdigest()[:16]
    assert KEY.key_id == ArchiveKey(SECRET).key_id != ArchiveKey(bytes(32)).key_id
    assert SECRET.hex() not in repr(KEY) and str(SECRET) not in repr(KEY) and KEY.key_id in repr(KEY)
    with pytest.raises(ArchiveKeyError, match="32 bytes"):
        ArchiveKey(b"short")


def test_parse_hex_and_base64() -> None:
    assert ArchiveKey.parse(f"  {SECRET.hex()}\n", "test") == KEY
    assert ArchiveKey.parse(SECRET.hex().upper(), "test") == KEY
    assert ArchiveKey.parse(base64.b64encode(SECRET).decode() + "\n", "test") == KEY
    assert ArchiveKey.parse(base64.urlsafe_b64encode(SECRET).decode().rstrip("="), "test") == KEY


@pytest.mark.parametrize("text", ["", SECRET.hex()[:-2], base64.b64encode(bytes(31)).decode(), "z" * 64, "not a key"])
def test_parse_refuses_a_bad_key_without_echoing_it(text: str) -> None:
    with pytest.raises(ArchiveKeyError, match=r"^my source: .*32 random bytes.*openssl rand -hex 32") as raised:
        ArchiveKey.parse(text, "my source")
    assert not text or text not in str(raised.value)


def test_load_from_a_private_file(tmp_path: Path) -> None:
    key_file = tmp_path / "archive.key"
    key_file.write_text(SECRET.hex() + "\n")
    key_file.chmod(0o600)
    assert load_archive_key(key_file, None) == KEY
    assert load_archive_key(None, None) is None
    assert load_archive_key(None, "") is None  # an empty variable is an unset one


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "archive.key"
    key_file.write_text(SECRET.hex())
    key_file.chmod(0o640)
    with pytest.raises(ArchiveKeyError, match=f"{key_file} is mode 0640.*chmod 600 {key_file}"):
        load_archive_key(key_file, None)


def test_a_missing_or_bad_key_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(ArchiveKeyError, match=f"archive key file {missing}: No such file"):
        load_archive_key(missing, None)
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"\xff" * 10)
    bad.chmod(0o600)
    with pytest.raises(ArchiveKeyError, match=f"^archive key file {bad}: the archive key must be"):
        load_archive_key(bad, None)


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "archive.key"
    key_file.write_text(bytes(32).hex())
    key_file.chmod(0o644)  # not even read: the environment's key is used
    assert load_archive_key(key_file, SECRET.hex()) == KEY
    with pytest.raises(ArchiveKeyError, match="^KVSTORE_ARCHIVE_KEY: "):
        load_archive_key(key_file, "nope")


def test_a_temp_dir_it_cannot_write_is_an_archive_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, store = stores(tmp_path)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "missing"))
    source_path = tmp_path / "snapshot.chk"
    source_path.write_bytes(b"data")
    with (
        source_path.open("rb") as source,
        pytest.raises(ArchiveError, match=r"encrypting .*/snap in .*/missing failed"),
    ):
        store.put("snap", source)
    assert store.list() == []
