"""kvctl's client: kvstore.client pinned to the one node the operator named, plus the admin calls.

The library owns the wire (paths, percent-encoded keys, ETags, retries, typed errors); this
adapter turns every failure into a `KvctlError` whose message is one line an operator can act
on and whose code a script can test: the server's `{"error": {"code", "message"}}`, or why
the server could not be reached (a `NodeUnreachable`). It prints nothing and knows nothing of
the login file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from kvstore.client import Call, Client, ClientError, Event, Progress, Retry
from kvstore.client import protocol as wire

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
# A checkpoint of a large store runs inside the request; give it minutes, not seconds.
ADMIN_TIMEOUT_S = 300.0
ERROR_TEXT_MAX_CHARS = 200

# kvctl's own error codes, for failures that carry no code from the node (`--format json` shows them).
ERROR_FAILED = "failed"  # kvctl could not do what was asked: a file it cannot read, a wait that ran out
ERROR_UNREACHABLE = "unreachable"  # the node gave no answer at all
ERROR_BAD_RESPONSE = "bad_response"  # the node answered something kvctl cannot use


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
    """The node at `url`, and only it: no retries, no following a 421 to the primary (kvctl acts
    on the node it is told). Use as a context manager, or call `close`."""

    def __init__(self, url: str, token: str | None = None, unauthorized_hint: str = "") -> None:
        """`unauthorized_hint` says what to do about a 401; it replaces the server's
        reason when no token was sent (the server can only say that one is missing)."""
        self.url = url
        self._unauthorized_hint = unauthorized_hint
        self._sends_token = token is not None
        self._client = Client(
            url,
            token=token,
            pinned=True,
            retry=Retry(attempts=1),
            timeout_s=REQUEST_TIMEOUT_S,
            connect_timeout_s=CONNECT_TIMEOUT_S,
        )

    def __enter__(self) -> KvClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- auth and data -----------------------------------------------------------------

    def login(self, user: str, password: str) -> dict[str, Any]:
        """Exchange a password for a token: {"token", "token_type", "expires_at"}."""
        return _json(self._send(wire.login(user, password)))

    def get(self, key: str) -> Value:
        with self._translated():
            item = self._client.get(_checked_key(key))
        if item is None:
            raise KvctlError(f"key {key!r} not found", "not_found")
        return Value(key, item.value, item.version, item.expires_at)

    def put(self, key: str, data: bytes, ttl_s: int | None, if_version: int | None, create_only: bool) -> Written:
        with self._translated():
            result = self._client.put(_checked_key(key), data, ttl=ttl_s, if_version=if_version, if_absent=create_only)
        return Written(key, result.version, result.commit_lsn, result.created)

    def delete(self, key: str, if_version: int | None) -> str:
        """Delete a key; returns the commit LSN of the DEL record."""
        answer = self._send(wire.delete(_checked_key(key), if_version))
        if answer.status == 404:
            raise KvctlError(f"key {key!r} not found", "not_found")
        return answer.headers.get("x-kv-commit-lsn", "")

    def incr(self, key: str, by: int) -> dict[str, Any]:
        """Add `by` to an integer value: {"key", "value", "version", "commit_lsn"}."""
        return _json(self._send(wire.incr(_checked_key(key), by)))

    def list_keys(self, prefix: str, after: str | None, limit: int) -> KeyPage:
        document = _json(self._send(wire.keys(prefix, after, limit)))
        return KeyPage(list(document["keys"]), document.get("next_after"))

    # -- admin -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self._json("GET", "/v1/status")

    def checkpoint(self) -> dict[str, Any]:
        return self._json("POST", "/v1/admin/checkpoint", timeout_s=ADMIN_TIMEOUT_S)

    def create_snapshot(self) -> dict[str, Any]:
        return self._json("POST", "/v1/admin/snapshots", timeout_s=ADMIN_TIMEOUT_S)

    def export_snapshot(self, to: str) -> dict[str, Any]:
        """A fresh checkpoint's snapshot and manifest uploaded by the node to `to` (s3:// or file://)."""
        return self._json("POST", "/v1/admin/snapshots/export", json={"to": to}, timeout_s=ADMIN_TIMEOUT_S)

    def list_snapshots(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/admin/snapshots")["snapshots"])

    def profile(self, seconds: int, form: str) -> bytes:
        """The node's event loop sampled for `seconds`: collapsed stacks or speedscope JSON."""
        params = {"seconds": str(seconds), "format": form}
        answer = self._request("GET", "/v1/admin/profile", (200,), params=params, timeout_s=seconds + REQUEST_TIMEOUT_S)
        return answer.body

    def wal_records(self, from_lsn: str | None, follow: bool) -> Iterator[WalLine]:
        """Stream WAL records as the node commits them; keepalive lines are skipped."""
        params = {"follow": "true" if follow else "false"}
        if from_lsn is not None:
            params["from_lsn"] = from_lsn
        with self._translated():
            for text in self._client.stream_lines(Call("GET", "/v1/admin/wal/records", (200,), params=params)):
                yield _wal_line(text)

    def audit(self, since: str | None, user: str | None, follow: bool) -> Iterator[str]:
        """The node's audit log lines (JSON text), oldest first; with follow, then new ones as
        they are written. Keepalive lines are skipped."""
        params = {"follow": "true" if follow else "false"}
        if since is not None:
            params["since"] = since
        if user is not None:
            params["user"] = user
        with self._translated():
            yield from self._client.stream_lines(Call("GET", "/v1/admin/audit", (200,), params=params))

    def watch(self, prefix: str, from_lsn: str | None) -> Iterator[Event | Progress]:
        """The committed changes under `prefix` (GET /v1/watch) and the node's progress marks,
        resumed by the library after a dropped connection."""
        with self._translated():
            yield from self._client.watch(prefix, from_lsn, progress=True)

    # -- failover (superuser only) ----------------------------------------------------

    def promote(self) -> dict[str, Any]:
        """Make this replica the primary of a new timeline: {"timeline", "parent_timeline",
        "switch_lsn", "old_primary", "old_primary_write_lsn", "unreceived_bytes", "seconds"}."""
        return _json(self._request("POST", "/v1/admin/promote", (200,), timeout_s=ADMIN_TIMEOUT_S))

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

    def _json(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs: Any) -> dict[str, Any]:
        return _json(self._request(method, path, expect, **kwargs))

    def _request(
        self,
        method: str,
        path: str,
        expect: tuple[int, ...],
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> wire.Answer:
        call = Call(method, path, expect, params=params or {}, headers=headers or {}, timeout_s=timeout_s)
        if json is not None:
            call.body = orjson.dumps(json)
            call.headers["content-type"] = "application/json"
        return self._send(call)

    def _send(self, call: Call) -> wire.Answer:
        with self._translated():
            return self._client.request(call)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """The library's typed errors as kvctl's: one line, the node's code, the 401 hint."""
        try:
            yield
        except ClientError as error:
            message = _one_line(error.message)
            if error.code == ERROR_UNREACHABLE or (error.code == "outcome_unknown" and error.status is None):
                reason = str(error.details.get("reason") or message)
                raise NodeUnreachable(message, reason) from None
            if error.status == 401 and self._unauthorized_hint:
                hint = self._unauthorized_hint
                raise KvctlError(f"{message}; {hint}" if self._sends_token else hint, error.code) from None
            raise KvctlError(message, error.code) from None


def _checked_key(key: str) -> str:
    if not key:
        raise KvctlError("key must not be empty")
    return key


def _name_path(kind: str, name: str) -> str:
    """`/v1/admin/<kind>/<name>` (users, roles, apikeys), the name percent-encoded."""
    if not name:
        raise KvctlError(f"{kind[:-1]} name must not be empty")
    return f"/v1/admin/{kind}/{quote(name, safe='')}"


def _preconditions(if_version: int | None) -> dict[str, str]:
    return {} if if_version is None else {"if-match": f'"{if_version}"'}


def _json(answer: wire.Answer) -> dict[str, Any]:
    document = answer.json()
    if not isinstance(document, dict):
        raise KvctlError(f"{answer.url} answered HTTP {answer.status} without a JSON object", ERROR_BAD_RESPONSE)
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


def _one_line(text: str) -> str:
    return " ".join(text.split())
