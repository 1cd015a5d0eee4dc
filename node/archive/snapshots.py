"""Snapshots in an object store: `<prefix>/snapshots/<timeline>-<redo LSN>/` holds `snapshot.chk` and
`manifest.json`. The manifest is written last, so a directory with one holds a whole snapshot."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import orjson

from ..control import Control
from ..wal.format import format_lsn
from .access import Stores
from .store import ArchiveError, ObjectStore, sha256_of

MANIFEST_FORMAT = 1
SNAPSHOTS = "snapshots"
SNAPSHOT_OBJECT = "snapshot.chk"
MANIFEST_OBJECT = "manifest.json"


@dataclass(frozen=True, slots=True)
class Manifest:
    format_version: int
    system_identifier: str  # a string: JSON readers lose 64-bit integers
    timeline: int
    redo_lsn: str
    consistent_lsn: str
    checkpoint_at_ms: int  # the checkpoint's end: the snapshot holds no write logged after it
    snapshot: str  # the object's name in the store
    source_file: str  # the snapshot's name in the node's base/
    bytes: int
    sha256: str
    created_at: str  # UTC, ISO 8601
    key_id: str | None  # the key it is encrypted with (crypto.py), None when plain

    def document(self) -> dict[str, Any]:
        return asdict(self)


def snapshot_dir(timeline: int, redo_lsn: int) -> str:
    # Fixed-width hex: names sort by timeline, then LSN.
    return f"{SNAPSHOTS}/{timeline:08X}-{redo_lsn:016X}"


def export_snapshot(
    store: ObjectStore,
    snapshot: BinaryIO,
    source_file: str,
    *,
    system_identifier: int,
    timeline: int,
    redo_lsn: int,
    consistent_lsn: int,
    checkpoint_at_ms: int,
    key_id: str | None = None,
    data: ObjectStore | None = None,
) -> Manifest:
    """Upload an open snapshot file, then its manifest. Blocking: the node runs it in a thread.
    `data` stores the snapshot itself when that differs from `store` (an encrypting store,
    crypto.py): manifests stay readable without the key, so `backup list` needs none."""
    directory = snapshot_dir(timeline, redo_lsn)
    size = snapshot.seek(0, 2)
    snapshot.seek(0)
    if data is None:
        expected = sha256_of(snapshot)
        digest = store.put(f"{directory}/{SNAPSHOT_OBJECT}", snapshot)
        if digest != expected:  # the file changed under the upload: it never does, base/ files are immutable
            raise ArchiveError(f"{source_file} changed while it was uploaded (SHA-256 {expected}, then {digest})")
    else:
        digest = data.put(f"{directory}/{SNAPSHOT_OBJECT}", snapshot)
    manifest = Manifest(
        format_version=MANIFEST_FORMAT,
        system_identifier=str(system_identifier),
        timeline=timeline,
        redo_lsn=format_lsn(redo_lsn),
        consistent_lsn=format_lsn(consistent_lsn),
        checkpoint_at_ms=checkpoint_at_ms,
        snapshot=f"{directory}/{SNAPSHOT_OBJECT}",
        source_file=source_file,
        bytes=size,
        sha256=digest,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        key_id=key_id,
    )
    store.put(f"{directory}/{MANIFEST_OBJECT}", orjson.dumps(manifest.document(), option=orjson.OPT_INDENT_2))
    return manifest


def export_checkpoint(stores: Stores, snapshot: BinaryIO, source_file: str, control: Control) -> Manifest:
    """`export_snapshot` of the checkpoint `control` describes into an archive's stores: the
    snapshot itself encrypted when the stores have a key, its manifest plain."""
    return export_snapshot(
        stores.meta,
        snapshot,
        source_file,
        system_identifier=control.system_identifier,
        timeline=control.timeline,
        redo_lsn=control.redo_lsn,
        consistent_lsn=control.consistent_lsn,
        checkpoint_at_ms=control.checkpoint_at_ms,
        key_id=stores.key_id,
        data=None if stores.key_id is None else stores.data,
    )


def list_snapshots(store: ObjectStore) -> list[Manifest]:
    """Every whole snapshot in the store (one with a manifest), oldest first."""
    names = sorted(info.name for info in store.list(f"{SNAPSHOTS}/") if info.name.endswith(f"/{MANIFEST_OBJECT}"))
    return [read_manifest(store, name) for name in names]


def read_manifest(store: ObjectStore, name: str) -> Manifest:
    try:
        document = orjson.loads(store.read(name))
        if document.get("format_version") != MANIFEST_FORMAT:
            raise ArchiveError(
                f"{store.url}/{name}: manifest format {document.get('format_version')!r}, this "
                f"version reads {MANIFEST_FORMAT}"
            )
        return Manifest(**document)
    except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
        raise ArchiveError(f"{store.url}/{name} is not a snapshot manifest: {exc}") from exc
