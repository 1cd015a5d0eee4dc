"""kvstore.client: the Python client library for KVStore++.

    from kvstore.client import Client

    with Client(["http://127.0.0.1:8080", "http://127.0.0.1:8081"], username="app", password="...") as kv:
        kv.put("app:greeting", "hello")
        item = kv.get("app:greeting")          # Item(value=b"hello", version=..., ...) or None
        kv.incr("app:visits")                  # retried safely: it carries an Idempotency-Key
        with kv.session():                     # read-your-writes, also on replicas
            ...
        for event in kv.watch("app:"):         # resumes by itself after a dropped connection
            ...

`AsyncClient` has the same surface with `await` (and `async for` for keys and watch).
"""

from typing import TYPE_CHECKING, Any

from .core import Retry, Session
from .errors import (
    BadRequest,
    ClientError,
    Compacted,
    Conflict,
    Forbidden,
    NotFound,
    OutcomeUnknown,
    PreconditionFailed,
    ReadOnlyReplica,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from .models import Check, Delete, Event, Item, KeyInfo, Set, TxnResult, WriteResult
from .protocol import Call, Progress
from .sync import Client

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Call",
    "Check",
    "Client",
    "ClientError",
    "Compacted",
    "Conflict",
    "Delete",
    "Event",
    "Forbidden",
    "Item",
    "KeyInfo",
    "NotFound",
    "OutcomeUnknown",
    "PreconditionFailed",
    "Progress",
    "ReadOnlyReplica",
    "Retry",
    "Session",
    "Set",
    "TooManyRequests",
    "TxnResult",
    "Unauthorized",
    "Unavailable",
    "WriteResult",
]

if TYPE_CHECKING:
    from .aio import AsyncClient


def __getattr__(name: str) -> Any:
    """AsyncClient on first use: aiohttp takes longer to import than the rest (kvctl starts faster)."""
    if name == "AsyncClient":
        from .aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
