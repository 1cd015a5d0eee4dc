"""What a valid catalog document is: one check per kind of `_sys.*` key. Pure.

Every catalog document is checked here before it is written, whichever way it comes
(the admin API, or a superuser's raw `PUT /v1/kv/_sys...`), and whenever one is read
back for authentication: a document that fails is never used. A damaged user refuses
that user, a damaged role grants nothing, a damaged API key authenticates no one; the
settings documents keep their last good version (see auth.py). So one bad document,
even one already in a WAL, a snapshot or a replica's stream, never takes the node down.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from . import auth_policy, catalog, hba, idempotency

# Matched with fullmatch (a `$` alone also lets a trailing newline through); the pattern text
# doubles as the OpenAPI document's JSON Schema pattern.
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_ROLES_PER_USER: Final = 100
MAX_GRANTS: Final = 100
MAX_PATTERN_CHARS: Final = 256
MAX_REASON_CHARS: Final = 500
MAX_CIDRS: Final = 32
MAX_SIGNING_KEYS: Final = 100
MIN_SECRET_CHARS: Final = 32
_HEX_64: Final = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID: Final = re.compile(r"^[0-9A-Za-z]{1,64}$")


class DocumentError(ValueError):
    """A catalog document that cannot be used; the message says which field and why."""


def check_name(raw: Any, what: str) -> str:
    if not isinstance(raw, str) or not NAME_PATTERN.fullmatch(raw):
        raise DocumentError(f"{what} name {raw!r} must be 1-64 of letters, digits, '_', '.', '@', '-'")
    return raw


def check_grants(raw: Any) -> list[dict[str, Any]]:
    """A role's grants in their stored form: actions deduplicated, in ACTIONS order."""
    if not isinstance(raw, list) or len(raw) > MAX_GRANTS:
        raise DocumentError(f"grants must be a list of at most {MAX_GRANTS} {{actions, pattern}} objects")
    return [check_grant(index, grant) for index, grant in enumerate(raw)]


def check_grant(index: int, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or set(raw) != {"actions", "pattern"}:
        raise DocumentError(f'grant {index}: must be {{"actions": [...], "pattern": "..."}}')
    actions, pattern = raw["actions"], raw["pattern"]
    if not isinstance(actions, list) or not actions or any(a not in catalog.ACTIONS for a in actions):
        raise DocumentError(f"grant {index}: actions must be a non-empty list of {', '.join(catalog.ACTIONS)}")
    if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_CHARS:
        raise DocumentError(f"grant {index}: pattern must be text of 1-{MAX_PATTERN_CHARS} characters")
    return {"actions": sorted(set(actions), key=catalog.ACTIONS.index), "pattern": pattern}


def check_cidrs(raw: Any) -> list[str]:
    if not isinstance(raw, list) or len(raw) > MAX_CIDRS or not all(isinstance(cidr, str) for cidr in raw):
        raise DocumentError(f"cidrs must be a list of at most {MAX_CIDRS} networks such as 10.0.0.0/8")
    try:
        return [str(ipaddress.ip_network(cidr, strict=False)) for cidr in raw]
    except (TypeError, ValueError) as error:
        raise DocumentError(f"bad CIDR: {error}") from None


# -- one check per kind ---------------------------------------------------------------------


def _fields(document: dict[str, Any], required: set[str], optional: set[str], what: str) -> None:
    missing = sorted(required - set(document))
    unknown = sorted(set(document) - required - optional)
    if missing:
        raise DocumentError(f"{what} lacks field(s) {', '.join(missing)}")
    if unknown:
        raise DocumentError(f"{what} has unknown field(s) {', '.join(unknown)}")


def _int(document: dict[str, Any], field: str, minimum: int = 0, optional: bool = False) -> None:
    value = document.get(field)
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DocumentError(f"{field} must be an integer of at least {minimum}, got {value!r}")


def _user(name: str, document: dict[str, Any]) -> None:
    _fields(
        document,
        {"name", "password_hash", "roles", "can_login", "locked_reason", "token_generation", "created_at_ms"},
        {"valid_until"},
        "a user document",
    )
    if document["name"] != check_name(name, "user"):
        raise DocumentError(f"name {document['name']!r} is not the key's user name {name!r}")
    if not isinstance(document["password_hash"], str) or not document["password_hash"].startswith("$argon2"):
        raise DocumentError("password_hash must be an argon2 hash ($argon2id$...); set passwords with kvctl user")
    roles = document["roles"]
    if not isinstance(roles, list) or len(roles) > MAX_ROLES_PER_USER:
        raise DocumentError(f"roles must be a list of at most {MAX_ROLES_PER_USER} role names")
    for role in roles:
        check_name(role, "role")
    if not isinstance(document["can_login"], bool):
        raise DocumentError("can_login must be true or false")
    reason = document["locked_reason"]
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise DocumentError(f"locked_reason must be null or text of at most {MAX_REASON_CHARS} characters")
    _int(document, "token_generation", 1)
    _int(document, "created_at_ms")
    _int(document, "valid_until", optional=True)


def _role(name: str, document: dict[str, Any]) -> None:
    _fields(document, {"name", "superuser", "grants"}, set(), "a role document")
    if document["name"] != check_name(name, "role"):
        raise DocumentError(f"name {document['name']!r} is not the key's role name {name!r}")
    if not isinstance(document["superuser"], bool):
        raise DocumentError("superuser must be true or false")
    check_grants(document["grants"])


def _apikey(key_id: str, document: dict[str, Any]) -> None:
    _fields(
        document,
        {"id", "name", "user", "cidrs", "expires_at", "created_at_ms", "secret_sha256"},
        {"user_created_at_ms"},
        "an API key document",
    )
    if document["id"] != key_id or not _KEY_ID.fullmatch(key_id):
        raise DocumentError(f"id {document['id']!r} is not the key's API key id {key_id!r} (letters and digits)")
    check_name(document["name"], "API key")
    check_name(document["user"], "user")
    check_cidrs(document["cidrs"])
    _int(document, "expires_at", optional=True)
    _int(document, "created_at_ms")
    _int(document, "user_created_at_ms", optional=True)
    if not isinstance(document["secret_sha256"], str) or not _HEX_64.fullmatch(document["secret_sha256"]):
        raise DocumentError("secret_sha256 must be 64 lower-case hex digits")


def _signing_keys(document: dict[str, Any]) -> None:
    _fields(document, {"current", "keys"}, set(), "the signing keys document")
    keys = document["keys"]
    if not isinstance(keys, dict) or not 0 < len(keys) <= MAX_SIGNING_KEYS:
        raise DocumentError(f"keys must be an object of 1-{MAX_SIGNING_KEYS} kid: key entries")
    if document["current"] not in keys:
        raise DocumentError(f"current names {document['current']!r}, which is not among the keys")
    for kid, key in keys.items():
        if not isinstance(key, dict):
            raise DocumentError(f"key {kid!r} must be an object")
        # `sealed` (encrypted under the cluster key) or, in a catalog made before sealing, `secret`.
        private = [name for name in ("sealed", "secret") if name in key]
        if len(private) != 1:
            raise DocumentError(f"key {kid!r} must have exactly one of sealed (or, before sealing, secret)")
        _fields(key, {private[0], "created_at_ms"}, {"retired_at_ms"}, f"key {kid!r}")
        if not isinstance(key[private[0]], str) or len(key[private[0]]) < MIN_SECRET_CHARS:
            raise DocumentError(f"key {kid!r}: {private[0]} must be text of at least {MIN_SECRET_CHARS} characters")
        _int(key, "created_at_ms")
        _int(key, "retired_at_ms", optional=True)


def _host_rules(document: dict[str, Any]) -> None:
    _fields(document, {"rules"}, set(), "the host rules document")
    try:
        hba.parse_rules(document["rules"])
    except hba.RuleError as error:
        raise DocumentError(str(error)) from None


def _auth(document: dict[str, Any]) -> None:
    try:
        auth_policy.from_document(document)
    except auth_policy.PolicyError as error:
        raise DocumentError(str(error)) from None


def _idempotency(_name: str, document: dict[str, Any]) -> None:
    """A remembered answer (idempotency.py): the node writes these, never a client."""
    try:
        idempotency.check_document(document)
    except ValueError as error:
        raise DocumentError(f"an idempotency answer: {error}") from None


def _marker(document: dict[str, Any]) -> None:
    _fields(document, {"catalog_version"}, set(), "the catalog marker")
    _int(document, "catalog_version", 1)


_SETTINGS: Final[dict[str, Callable[[dict[str, Any]], None]]] = {
    catalog.JWT_KEYS_KEY: _signing_keys,
    catalog.HBA_KEY: _host_rules,
    catalog.AUTH_KEY: _auth,
    catalog.CATALOG_MARKER_KEY: _marker,
}
_NAMED: Final[dict[str, Callable[[str, dict[str, Any]], None]]] = {
    catalog.USERS_PREFIX: _user,
    catalog.ROLES_PREFIX: _role,
    catalog.APIKEYS_PREFIX: _apikey,
    idempotency.PREFIX: _idempotency,
}


def parse(key: str, value: bytes) -> dict[str, Any]:
    """The document stored under catalog `key`, checked; DocumentError says what is wrong."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise DocumentError(f"not a JSON document ({error})") from None
    if not isinstance(document, dict):
        raise DocumentError("a catalog document must be a JSON object")
    settings_check = _SETTINGS.get(key)
    if settings_check is not None:
        settings_check(document)
        return document
    for prefix, check in _NAMED.items():
        if key.startswith(prefix):
            check(key[len(prefix) :], document)
            return document
    if key.startswith(catalog.SETTINGS_PREFIX):
        known = ", ".join(sorted(_SETTINGS))
        raise DocumentError(f"{key} is not a setting this node knows ({known})")
    raise DocumentError(f"{key} is not in a catalog ({', '.join(catalog.CATALOGS)}*)")
