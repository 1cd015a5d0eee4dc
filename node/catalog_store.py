"""Catalog documents with their versions: checked reads and compare-and-set writes.

Everything that reads a `_sys.*` document to change it (the authenticator's password rehash,
the admin API, the node's start) reads it with its version here and writes it back here
only if that version is still current, so two writers never lose an update: the loser gets
a 409 Conflict and retries. Whether a document may be written at all (its references, the
built-in roles) is catalog_changes.py's business; this module only stores.

Reads come in three strictnesses, one per kind of reader: `document` raises DocumentError
on a damaged document, `read` turns it into a 409 an administrator sees, and `usable`
treats it as absent (authentication: catalog_health.py reports it).
"""

from __future__ import annotations

from typing import Any

from . import catalog, catalog_documents
from .catalog_documents import DocumentError
from .engine import Engine
from .errors import Conflict, PreconditionFailed
from .store import Entry, entry_value, entry_version
from .writes import WriteResult, now_ms


def _parsed(key: str, entry: Entry) -> tuple[int, dict[str, Any]]:
    return entry_version(entry), catalog_documents.parse(key, entry_value(entry))


class DamagedDocument(Conflict):
    """A stored document fails its check (written before writes were checked, or by a bug)."""

    code = "damaged_catalog_document"

    def __init__(self, key: str, version: int, why: str) -> None:
        super().__init__(f"{key} is damaged ({why}); replace it (PUT /v1/kv/{key}) or delete it", key=key)
        self.version = version


class CatalogStore:
    def __init__(self, engine: Engine, page_keys: int) -> None:
        """`page_keys`: how many keys one scan of a catalog examines at a time."""
        self._engine = engine
        self._page_keys = page_keys

    @property
    def epoch(self) -> int:
        """Moves on every change to the catalog: caches built from it are stale once it does."""
        return self._engine.store.watched_epoch

    @property
    def revision(self) -> int:
        """The highest version the store has applied (catalog_rules.fresh_generation builds on it)."""
        return self._engine.store.revision

    # -- reads -----------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Something is stored at `key`, usable or not."""
        return self._engine.get(key) is not None

    def version(self, key: str) -> int | None:
        """The version stored at `key`, damaged or not: what a replacing write compares with."""
        entry = self._engine.get(key)
        return None if entry is None else entry_version(entry)

    def stored(self, key: str) -> bytes | None:
        """The value at `key` as stored, unchecked: for a look that must see a damaged document too."""
        entry = self._engine.get(key)
        return None if entry is None else entry_value(entry)

    def document(self, key: str) -> tuple[int, dict[str, Any]] | None:
        """(version, checked document) at `key`, None when absent; DocumentError when damaged."""
        entry = self._engine.get(key)
        return None if entry is None else _parsed(key, entry)

    def usable(self, key: str) -> tuple[int, dict[str, Any]] | None:
        """Like `document`, but a damaged document counts as none (catalog_health reports it)."""
        try:
            return self.document(key)
        except DocumentError:
            return None

    def read(self, key: str) -> tuple[int, dict[str, Any]] | None:
        """Like `document`, but a damaged document is a DamagedDocument (a 409) for the caller."""
        entry = self._engine.get(key)
        if entry is None:
            return None
        try:
            return _parsed(key, entry)
        except DocumentError as error:
            raise DamagedDocument(key, entry_version(entry), str(error)) from None

    def all(self, prefix: str) -> list[tuple[int, dict[str, Any]]]:
        """Every usable document under a catalog prefix, page by page (never silently cut short);
        damaged ones are left out (catalog_health reports them)."""
        store = self._engine.store
        documents: list[tuple[int, dict[str, Any]]] = []
        after: str | None = None
        while True:
            page, more = store.scan(prefix, after, self._page_keys, now_ms())
            for key, entry in page:
                try:
                    documents.append(_parsed(key, entry))
                except DocumentError:
                    continue
            if not more or not page:
                return documents
            after = page[-1][0]

    # -- writes ----------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, version: int | None) -> WriteResult:
        """Create (version None) or compare-and-set the document at `key`; a 409 Conflict when
        it exists already, or its version moved since it was read."""
        try:
            return await self._engine.put(key, value, if_version=version, if_absent=version is None)
        except PreconditionFailed:
            what = "already exists" if version is None else "was changed by someone else meanwhile; retry"
            raise Conflict(f"{key.removeprefix(catalog.SYS_PREFIX)} {what}") from None
