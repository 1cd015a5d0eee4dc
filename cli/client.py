"""kvctl's HTTP client: one small class over httpx for the node's API.

It owns the wire details (paths, percent-encoded keys, ETag preconditions, NDJSON
streaming) and turns every failure into a `KvctlError` whose message is one line an
operator can act on and whose code a script can test: the server's `{"error": {"code",
"message"}}`, or why the server could not be reached (a `NodeUnreachable`). It prints
nothing and knows nothing of the login file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
# A checkpoint of a large store runs inside the request; give it minutes, not seconds.
ADMIN_TIMEOUT_S = 300.0
# The WAL stream sends a keepalive every 5 s; six missed ones mean the server is gone.
STREAM_READ_TIMEOUT_S = 30.0
ERROR_TEXT_MAX_CHARS = 200

# kvctl's own error codes, for failures that carry no code from the node (`--format json` shows them).
ERROR_FAILED = "failed"  # kvctl could not do what was asked: a file it cannot read, a wait that ran out
ERROR_UNREACHABLE = "unreachable"  # the node gave no answer at all
ERROR_BAD_RESPONSE = "bad_response"  # the node answered something kvctl cannot use

_REQUEST_TIMEOUT = httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
_ADMIN_TIMEOUT = httpx.Timeout(ADMIN_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
_STREAM_TIMEOUT = httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)


class KvctlError(Exception):
    """An operating error kvctl reports as `kvctl: <message>` (or, with `--format json`, as
    `{"error": {"code", "message"}}`) and exit status 1. `code` is the node's error code when
    the node gave one, else one of kvctl's own `ERROR_*`."""

    def __init__(self, message: str, code: str = ERROR_FAILED) -> None:
        self.message = _one_line(message)
        self.code = code
        super().__init__(self.message)


class NodeUnreachable(KvctlError):
    """The node gave no answer at all (refused, timed out, cut off); `reason` says why without the URL."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, ERROR_UNREACHABLE)
        self.reason = _one_line(reason)


@dataclass(frozen=True, slots=True)
class Value:
    key: str
    data: bytes
    version: int
    expires_at: str | None


@dataclass(frozen=True, slots=True)
class Written:
    key: str
    version: int
    commit_lsn: str
    created: bool


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[dict[str, Any]]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class WalLine:
    """One NDJSON record of the WAL stream: the line as sent and its parsed form."""

    text: str
    record: dict[str, Any]


class KvClient:
    """A connection to one node. Use as a context manager, or call `close`."""

    def __init__(self, url: str, token: str | None = None, unauthorized_hint: str = "") -> None:
        """`unauthorized_hint` says what to do about a 401; it replaces the server's
        reason when no token was sent (the server can only say that one is missing)."""
        headers = {"user-agent": "kvctl"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        self.url = url
        self._unauthorized_hint = unauthorized_hint
        self._sends_token = token is not None
        self._http = httpx.Client(base_url=url, headers=headers, timeout=_REQUEST_TIMEOUT)

    def __enter__(self) -> KvClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- auth and data -----------------------------------------------------------------

    def login(self, user: str, password: str) -> dict[str, Any]:
        """Exchange a password for a token: {"token", "token_type", "expires_at"}."""
        response = self._request("POST", "/v1/auth/login", (200,), json={"username": user, "password": password})
        return _json(response)

    def get(self, key: str) -> Value:
        response = self._request("GET", _key_path(key), (200,))
        version = _etag_version(response)
        return Value(key, response.content, version, response.headers.get("x-kv-expires-at"))

    def put(self, key: str, data: bytes, ttl_s: int | None, if_version: int | None, create_only: bool) -> Written:
        headers = _preconditions(if_version)
        if create_only:
            headers["if-none-match"] = "*"
        params = {"ttl": str(ttl_s)} if ttl_s is not None else {}
        response = self._request("PUT", _key_path(key), (200, 201), content=data, headers=headers, params=params)
        document = _json(response)
        return Written(key, int(document["version"]), str(document["commit_lsn"]), response.status_code == 201)

    def delete(self, key: str, if_version: int | None) -> str:
        """Delete a key; returns the commit LSN of the DEL record."""
        response = self._request("DELETE", _key_path(key), (204,), headers=_preconditions(if_version))
        return str(response.headers.get("x-kv-commit-lsn", ""))

    def incr(self, key: str, by: int) -> dict[str, Any]:
        """Add `by` to an integer value: {"key", "value", "version", "commit_lsn"}."""
        return _json(self._request("POST", f"{_key_path(key)}/incr", (200,), params={"by": str(by)}))

    def list_keys(self, prefix: str, after: str | None, limit: int) -> KeyPage:
        params = {"prefix": prefix, "limit": str(limit)}
        if after is not None:
            params["after"] = after
        document = _json(self._request("GET", "/v1/kv", (200,), params=params))
        return KeyPage(list(document["keys"]), document.get("next_after"))

    # -- admin -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return _json(self._request("GET", "/v1/status", (200,)))

    def checkpoint(self) -> dict[str, Any]:
        return _json(self._request("POST", "/v1/admin/checkpoint", (200,), timeout=_ADMIN_TIMEOUT))

    def create_snapshot(self) -> dict[str, Any]:
        return _json(self._request("POST", "/v1/admin/snapshots", (200,), timeout=_ADMIN_TIMEOUT))

    def list_snapshots(self) -> list[dict[str, Any]]:
        return list(_json(self._request("GET", "/v1/admin/snapshots", (200,)))["snapshots"])

    def wal_records(self, from_lsn: str | None, follow: bool) -> Iterator[WalLine]:
        """Stream WAL records as the node commits them; keepalive lines are skipped."""
        params = {"follow": "true" if follow else "false"}
        if from_lsn is not None:
            params["from_lsn"] = from_lsn
        for text in self._ndjson("/v1/admin/wal/records", params):
            yield _wal_line(text)

    def watch(self, prefix: str, from_lsn: str | None) -> Iterator[WalLine]:
        """Stream the committed changes under `prefix` (GET /v1/watch): events, progress lines
        and a last `cancelled` line when the node cuts the watch off."""
        params = {"prefix": prefix}
        if from_lsn is not None:
            params["from_lsn"] = from_lsn
        for text in self._ndjson("/v1/watch", params):
            yield _wal_line(text)

    def _ndjson(self, path: str, params: dict[str, str]) -> Iterator[str]:
        """The non-empty lines of a long-lived NDJSON answer (empty ones are keepalives)."""
        try:
            with self._http.stream("GET", path, params=params, timeout=_STREAM_TIMEOUT) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._error(response)
                for text in response.iter_lines():
                    if text.strip():
                        yield text
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None

    # -- failover (superuser only) ----------------------------------------------------

    def promote(self) -> dict[str, Any]:
        """Make this replica the primary of a new timeline: {"timeline", "parent_timeline",
        "switch_lsn", "old_primary", "old_primary_write_lsn", "unreceived_bytes", "seconds"}."""
        return _json(self._request("POST", "/v1/admin/promote", (200,), timeout=_ADMIN_TIMEOUT))

    def rejoin(self, primary_url: str) -> dict[str, Any]:
        """Ask this node to follow `primary_url`. The answer (202) is the plan {"action": follow |
        rewind | rebootstrap, "switch_lsn", "divergent_bytes", "kept_in", ...}, which the node
        carries out as it restarts itself."""
        return _json(self._request("POST", "/v1/admin/rejoin", (202,), json={"primary": primary_url}))

    # -- users and roles (superuser only) ---------------------------------------------

    def create_user(self, name: str, password: str, roles: list[str], valid_until: int | None) -> dict[str, Any]:
        body = {"name": name, "password": password, "roles": roles, "valid_until": valid_until}
        return _json(self._request("POST", "/v1/admin/users", (201,), json=body))

    def list_users(self) -> list[dict[str, Any]]:
        return list(_json(self._request("GET", "/v1/admin/users", (200,)))["users"])

    def get_user(self, name: str) -> dict[str, Any]:
        return _json(self._request("GET", _name_path("users", name), (200,)))

    def delete_user(self, name: str) -> None:
        self._request("DELETE", _name_path("users", name), (204,))

    def set_password(self, name: str, password: str) -> None:
        self._request("PUT", f"{_name_path('users', name)}/password", (204,), json={"password": password})

    def lock_user(self, name: str, reason: str | None) -> dict[str, Any]:
        """Lock a user out; with no reason the node records a default one."""
        return _json(self._request("POST", f"{_name_path('users', name)}/lock", (200,), json={"reason": reason}))

    def unlock_user(self, name: str) -> dict[str, Any]:
        return _json(self._request("POST", f"{_name_path('users', name)}/unlock", (200,)))

    def change_roles(self, name: str, grant: list[str], revoke: list[str]) -> dict[str, Any]:
        body = {"grant": grant, "revoke": revoke}
        return _json(self._request("POST", f"{_name_path('users', name)}/roles", (200,), json=body))

    def create_role(self, name: str, grants: list[dict[str, Any]], superuser: bool) -> dict[str, Any]:
        body = {"name": name, "grants": grants, "superuser": superuser}
        return _json(self._request("POST", "/v1/admin/roles", (201,), json=body))

    def list_roles(self) -> list[dict[str, Any]]:
        return list(_json(self._request("GET", "/v1/admin/roles", (200,)))["roles"])

    def get_role(self, name: str) -> dict[str, Any]:
        return _json(self._request("GET", _name_path("roles", name), (200,)))

    def delete_role(self, name: str) -> None:
        self._request("DELETE", _name_path("roles", name), (204,))

    def alter_role(self, name: str, grant: list[dict[str, Any]], revoke: list[dict[str, Any]]) -> dict[str, Any]:
        """Add or take away actions on patterns in place; the holders get them on their next request."""
        body = {"grant": grant, "revoke": revoke}
        return _json(self._request("PATCH", _name_path("roles", name), (200,), json=body))

    # -- the auth policy (superuser only) -----------------------------------------------

    def get_auth_settings(self) -> dict[str, Any]:
        """The cluster's auth policy in force and its document version: {"settings", "version"}."""
        return _json(self._request("GET", "/v1/admin/settings/auth", (200,)))

    def change_auth_settings(self, changes: dict[str, int]) -> dict[str, Any]:
        return _json(self._request("PATCH", "/v1/admin/settings/auth", (200,), json=changes))

    # -- API keys (superuser only) ----------------------------------------------------

    def create_apikey(self, name: str, user: str, cidrs: list[str], expires_at: int | None) -> dict[str, Any]:
        """Create an API key; the answer holds its token, which the node never sends again."""
        body = {"name": name, "user": user, "cidrs": cidrs, "expires_at": expires_at}
        return _json(self._request("POST", "/v1/admin/apikeys", (201,), json=body))

    def list_apikeys(self) -> list[dict[str, Any]]:
        return list(_json(self._request("GET", "/v1/admin/apikeys", (200,)))["apikeys"])

    def revoke_apikey(self, name: str) -> None:
        self._request("DELETE", _name_path("apikeys", name), (204,))

    # -- host rules and signing keys (superuser only) ----------------------------------

    def get_hba(self) -> dict[str, Any]:
        """The host rules in order and their document version: {"rules", "version"}."""
        return _json(self._request("GET", "/v1/admin/hba", (200,)))

    def put_hba(self, rules: list[Any], if_version: int | None, force: bool) -> dict[str, Any]:
        """Replace the host rules; with `if_version`, only if they are still at it (else 412).
        `force` lets through rules that would reject this very client."""
        params = {"force": "true"} if force else {}
        response = self._request(
            "PUT", "/v1/admin/hba", (200,), json={"rules": rules}, headers=_preconditions(if_version), params=params
        )
        return _json(response)

    def list_jwt_keys(self) -> dict[str, Any]:
        """The token signing keys, never their secrets: {"current", "keys"}."""
        return _json(self._request("GET", "/v1/admin/jwt-keys", (200,)))

    def rotate_jwt_key(self, drop_old: bool) -> dict[str, Any]:
        """Make a new current signing key; `drop_old` also drops every other key at once."""
        return _json(self._request("POST", "/v1/admin/jwt-keys/rotate", (200,), json={"drop_old": drop_old}))

    # -- plumbing ----------------------------------------------------------------------

    def _request(self, method: str, path: str, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None
        if response.status_code not in expect:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> KvctlError:
        code, reason = _http_error(response)
        if response.status_code != 401 or not self._unauthorized_hint:
            return KvctlError(reason, code)
        hinted = f"{reason}; {self._unauthorized_hint}" if self._sends_token else self._unauthorized_hint
        return KvctlError(hinted, code)


def _key_path(key: str) -> str:
    if not key:
        raise KvctlError("key must not be empty")
    return f"/v1/kv/{quote(key, safe='')}"


def _name_path(kind: str, name: str) -> str:
    """`/v1/admin/<kind>/<name>` (users, roles, apikeys), the name percent-encoded."""
    if not name:
        raise KvctlError(f"{kind[:-1]} name must not be empty")
    return f"/v1/admin/{kind}/{quote(name, safe='')}"


def _preconditions(if_version: int | None) -> dict[str, str]:
    return {} if if_version is None else {"if-match": f'"{if_version}"'}


def _etag_version(response: httpx.Response) -> int:
    etag = response.headers.get("etag", "")
    try:
        return int(etag.removeprefix("W/").strip('"'))
    except ValueError:
        raise KvctlError(f"server sent no version ETag (got {etag!r})", ERROR_BAD_RESPONSE) from None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise KvctlError(
            f"{response.request.url} answered HTTP {response.status_code} without a JSON object", ERROR_BAD_RESPONSE
        )
    return document


def _wal_line(text: str) -> WalLine:
    try:
        record = json.loads(text)
    except ValueError:
        raise KvctlError(
            f"WAL stream sent a line that is not JSON: {text[:ERROR_TEXT_MAX_CHARS]!r}", ERROR_BAD_RESPONSE
        ) from None
    if not isinstance(record, dict):
        raise KvctlError(
            f"WAL stream sent a line that is not an object: {text[:ERROR_TEXT_MAX_CHARS]!r}", ERROR_BAD_RESPONSE
        )
    error = record.get("error")
    if isinstance(error, dict):
        raise KvctlError(str(error.get("message")), str(error.get("code") or ERROR_FAILED))
    return WalLine(text, record)


def _http_error(response: httpx.Response) -> tuple[str, str]:
    """The server's JSON error as (code, one line), or `bad_response` and the start of whatever else it sent."""
    try:
        error = response.json()["error"]
        if isinstance(error, dict) and "message" in error:
            return str(error.get("code") or ERROR_FAILED), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass
    text = response.text.strip()[:ERROR_TEXT_MAX_CHARS] or response.reason_phrase
    return ERROR_BAD_RESPONSE, f"{response.request.url} answered HTTP {response.status_code}: {text}"


def _unreachable(url: str, exc: httpx.TransportError) -> NodeUnreachable:
    if isinstance(exc, httpx.ConnectTimeout):
        reason = f"no answer within {CONNECT_TIMEOUT_S:g} s"
        return NodeUnreachable(f"cannot reach {url}: {reason}", reason)
    if isinstance(exc, httpx.TimeoutException):
        reason = f"did not answer in time ({type(exc).__name__})"
        return NodeUnreachable(f"{url} {reason}", reason)
    if isinstance(exc, httpx.ConnectError):
        reason = _os_reason(exc)
        return NodeUnreachable(f"cannot reach {url}: {reason}", reason)
    reason = f"connection failed: {_os_reason(exc)}"
    return NodeUnreachable(f"connection to {url} failed: {_os_reason(exc)}", reason)


def _os_reason(exc: BaseException) -> str:
    """The innermost OS error text ("connection refused"), else the exception's own."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())
