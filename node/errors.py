"""Operating errors a client can cause or see, each with an HTTP status and a stable code.

Handlers raise these; the API edge turns them into `{"error": {"code", "message"}}`.
Anything else that escapes a handler is a bug: logged with its traceback, answered 500.
"""

from __future__ import annotations

from collections.abc import Iterable


class KvError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(KvError):
    pass


class Unauthorized(KvError):
    status = 401
    code = "unauthorized"


class Forbidden(KvError):
    status = 403
    code = "forbidden"


class NotFound(KvError):
    status = 404
    code = "not_found"


class MethodNotAllowed(KvError):
    """RFC 9110: a 405 names the methods the path does support (the `Allow` header)."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: Iterable[str]) -> None:
        super().__init__(message)
        self.allowed = tuple(sorted(allowed))


class RequestTimeout(KvError):
    """The client did not send the body its headers announced in time (http_body_timeout_ms)."""

    status = 408
    code = "request_timeout"


class LsnBeyondWalEnd(BadRequest):
    """An LSN past this primary's WAL end (a read's X-KV-Min-LSN, a replica's feedback): no
    write has it, so waiting for it, or recording it, would mean nothing."""

    code = "lsn_beyond_wal_end"


class IncompleteBody(BadRequest):
    """The client ended its side of the connection before sending the body it announced."""

    code = "incomplete_body"


class Conflict(KvError):
    status = 409
    code = "conflict"


class NotAnInteger(Conflict):
    """INCR on a value that is not a 64-bit integer, or would leave that range (Redis: "value is
    not an integer or out of range"): the request is fine, the key's current value is not."""

    code = "not_an_integer"


class Gone(KvError):
    """What a request asks for is no longer kept (WAL a checkpoint recycled)."""

    status = 410
    code = "compacted"


class LengthRequired(KvError):
    status = 411
    code = "length_required"


class PreconditionFailed(KvError):
    status = 412
    code = "precondition_failed"


class PayloadTooLarge(KvError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(KvError):
    status = 429
    code = "too_many_requests"


class Unavailable(KvError):
    status = 503
    code = "unavailable"


class ReadOnly(KvError):
    """A replica, or a fenced former primary: writes belong to another node (named in the message).

    421 Misdirected Request: the request is fine, this node is the wrong one to send it to.
    """

    status = 421
    code = "read_only"


class GatewayTimeout(KvError):
    """A bounded wait ran out: a replica did not reach an LSN, or replicas did not confirm a commit."""

    status = 504
    code = "timeout"


class AlreadyExists(Conflict):
    """A create-only write found its name taken in an object store: nothing was overwritten."""

    code = "already_exists"


class BadGateway(KvError):
    """A service the node called for the request (an object store) refused or failed."""

    status = 502
    code = "upstream_failed"
