"""The errors a client call raises, one class per thing a caller may want to handle.

Each carries the node's error `code` and `message` (`{"error": {"code", "message"}}`), the
HTTP status and the node's URL. A key that is not there is not an error for `get` (it
answers None); `delete` answers False.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base class: something the node refused, or could not be asked."""

    def __init__(self, message: str, code: str, status: int | None = None, url: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.url = url
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


class BadRequest(ClientError):
    """400, 413 and the other answers that say the request itself is wrong: do not retry it."""


class Unauthorized(ClientError):
    """401: no credentials, or ones the node does not accept (expired, revoked)."""


class Forbidden(ClientError):
    """403: authenticated, but not granted this action on this key."""


class NotFound(ClientError):
    """404 where absence is an error: a user, a role, a key an INCR precondition names."""


class Conflict(ClientError):
    """409: the request conflicts with the state (a value that is not an integer, for INCR)."""


class PreconditionFailed(ClientError):
    """412: `if_version` or `if_absent` did not hold; `details` may hold the current version."""


class Compacted(ClientError):
    """410: a watch's `from_lsn` is older than the WAL still held; `oldest_lsn` says from where
    the node can resume. Re-read the state and watch again from the LSN that read answered."""

    @property
    def oldest_lsn(self) -> str | None:
        value = self.details.get("oldest_lsn")
        return None if value is None else str(value)


class ReadOnlyReplica(ClientError):
    """421 from every node tried: no primary took the write (all replicas, or a fenced primary)."""


class TooManyRequests(ClientError):
    """429: throttled (logins, watchers); `retry_after_s` says when to come back."""


class Unavailable(ClientError):
    """503 or no answer: the node cannot serve now (starting, WAL failed, unreachable). Safe to
    retry later: nothing was done, or the call was a read."""


class OutcomeUnknown(ClientError):
    """A write was sent and then the answer was lost (504, a dropped connection, a timeout), and
    a retry could not be recognised by the node: it may or may not have committed. Read the key
    to find out."""


_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: BadRequest,
    409: Conflict,
    410: Compacted,
    411: BadRequest,
    412: PreconditionFailed,
    413: BadRequest,
    421: ReadOnlyReplica,
    422: BadRequest,
    429: TooManyRequests,
    503: Unavailable,
    504: Unavailable,
}


def error_for(status: int, document: Any, text: str, url: str) -> ClientError:
    """The typed error for a node's non-2xx answer (`document` its parsed JSON body, if any)."""
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and "message" in error:
        details = {name: value for name, value in error.items() if name not in ("code", "message")}
        code, message = str(error.get("code") or "error"), str(error["message"])
    else:
        details, code = {}, "bad_response"
        message = f"{url} answered HTTP {status}: {' '.join(text.split())[:200] or 'no body'}"
    kind = _BY_STATUS.get(status, Unavailable if status >= 500 else BadRequest)
    return kind(message, code, status, url, **details)
