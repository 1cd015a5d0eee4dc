"""Opening an archive: its stores (plain, and encrypting when there is a key) and the check that
it belongs to this cluster (`archive.json`), for the archiver, restore and `kvctl backup`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .crypto import ArchiveKey, EncryptedStore, load_archive_key
from .layout import ARCHIVE_INFO, ArchiveInfo, holds_data
from .store import ArchiveError, ObjectExists, ObjectMissing, ObjectStore, open_store


@dataclass(frozen=True, slots=True)
class Stores:
    """Where objects go: `meta` for what is read without the key (archive.json, manifests,
    histories: LSNs, sizes and digests, no data), `data` for WAL segments and snapshots (the
    same store, or one that encrypts)."""

    meta: ObjectStore
    data: ObjectStore
    key_id: str | None

    @classmethod
    def open(cls, url: str, key: ArchiveKey | None) -> Stores:
        store = open_store(url)
        if key is None:
            return cls(store, store, None)
        return cls(store, EncryptedStore(store, key), key.key_id)

    @property
    def url(self) -> str:
        return self.meta.url

    def for_object(self, name: str) -> ObjectStore:
        return self.data if holds_data(name) else self.meta


def open_archive(url: str, key_file: Path | None, key_text: str | None) -> Stores:
    """The archive at `url`, with the key from KVSTORE_ARCHIVE_KEY's value (`key_text`) or a file."""
    return Stores.open(url, load_archive_key(key_file, key_text))


def read_info(meta: ObjectStore) -> ArchiveInfo:
    """archive.json; ObjectMissing when the location holds no archive."""
    data = meta.read(ARCHIVE_INFO)
    try:
        return ArchiveInfo.decode(data)
    except (ValueError, TypeError) as error:
        raise ArchiveError(f"{meta.url}/{ARCHIVE_INFO} is not an archive description: {error}") from None


def claim(stores: Stores, system_identifier: int) -> None:
    """Write archive.json into a new archive, or check that an existing one is this cluster's
    and uses this key. Blocking."""
    try:
        info = read_info(stores.meta)
    except ObjectMissing:
        try:
            stores.meta.put(ARCHIVE_INFO, ArchiveInfo.new(system_identifier, stores.key_id).encode())
            return
        except ObjectExists:  # another node wrote it first: check theirs
            info = read_info(stores.meta)
    if info.system_identifier != str(system_identifier):
        raise ArchiveError(
            f"{stores.url} is the archive of system {info.system_identifier}, not of this one "
            f"({system_identifier}); give each cluster its own archive_url"
        )
    check_key(stores, info)


def check_key(stores: Stores, info: ArchiveInfo) -> None:
    """The key given is the archive's (or neither has one): refuse before downloading anything."""
    if info.key_id != stores.key_id:
        archived = f"with archive key {info.key_id}" if info.key_id else "unencrypted"
        given = f"key {stores.key_id}" if stores.key_id else "no archive key"
        raise ArchiveError(
            f"{stores.url} is archived {archived}, but {given} was given; use the archive's key "
            "(archive_key_file / --key-file, or KVSTORE_ARCHIVE_KEY)"
        )
