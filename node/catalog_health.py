"""Catalog documents that fail their check: logged, counted, shown in /v1/status.

Nothing here refuses anything: readers of the catalog (auth.py) ignore a damaged document
on their own. This keeps the list an operator needs to repair them: every `_sys.*`
document is checked once after recovery, then each one again whenever it changes (by a
write, a replayed record, or a replica's stream).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from . import catalog_documents
from .store import Entry, entry_value, entry_version

log = logging.getLogger(__name__)

DESCRIBED_MAX: Final = 100  # /v1/status lists at most this many; the count covers all


class CatalogHealth:
    def __init__(self) -> None:
        self._damaged: dict[str, tuple[int, str]] = {}  # key -> (version, why)

    def __len__(self) -> int:
        return len(self._damaged)

    def check(self, key: str, entry: Entry | None) -> None:
        if entry is None:
            self._damaged.pop(key, None)
            return
        try:
            catalog_documents.parse(key, entry_value(entry))
        except catalog_documents.DocumentError as error:
            version = entry_version(entry)
            found = (version, str(error))
            if self._damaged.get(key) != found:
                log.error(
                    "damaged catalog document ignored: %s (version %d): %s; repair it with kvctl or the admin API",
                    key,
                    version,
                    error,
                    extra={"key": key, "version": version},
                )
            self._damaged[key] = found
        else:
            self._damaged.pop(key, None)

    def check_all(self, entries: Iterable[tuple[str, Entry]]) -> None:
        for key, entry in entries:
            self.check(key, entry)

    def describe(self) -> dict[str, Any]:
        shown = sorted(self._damaged.items())[:DESCRIBED_MAX]
        return {
            "damaged": len(self._damaged),
            "documents": [{"key": key, "version": version, "error": why} for key, (version, why) in shown],
        }
