"""System catalogs: `_sys.*` keys, their JSON documents and the bootstrap set. Pure.

    _sys.users:<name>       {"name", "password_hash", "roles", "can_login", "locked_reason",
                             "token_generation", "created_at_ms"}
    _sys.roles:<name>       {"name", "superuser", "grants": [{"actions": [...], "pattern": "app:*"}]}
    _sys.settings:<name>    settings documents: `jwt_keys` the token signing keys (see
                            signing_keys.py), `hba` the host rules (see hba.py), `auth`
                            the cluster's authentication policy (see auth_policy.py)
    _sys.settings:catalog   {"catalog_version"}: written last by bootstrap, so its presence
                            means the catalog exists (deleting the admin user later must
                            not make the next start re-bootstrap)
    _sys.idempotency:<user>:<key>  the answer to a write sent with an Idempotency-Key
                            (idempotency.py): no catalog, but a system key, so only
                            superusers read it; written by the node only, with a TTL

Catalog changes are ordinary SET/DEL records, so they are logged, replayed and
replicated exactly like data.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from . import auth_policy, hba
from .control import CATALOG_VERSION

SYS_PREFIX: Final = "_sys."
USERS_PREFIX: Final = "_sys.users:"
ROLES_PREFIX: Final = "_sys.roles:"
APIKEYS_PREFIX: Final = "_sys.apikeys:"
SETTINGS_PREFIX: Final = "_sys.settings:"
CATALOG_MARKER_KEY: Final = SETTINGS_PREFIX + "catalog"
JWT_KEYS_KEY: Final = SETTINGS_PREFIX + "jwt_keys"
HBA_KEY: Final = SETTINGS_PREFIX + "hba"
AUTH_KEY: Final = SETTINGS_PREFIX + "auth"
CATALOGS: Final = (USERS_PREFIX, ROLES_PREFIX, APIKEYS_PREFIX, SETTINGS_PREFIX)

ACTIONS: Final = ("read", "write", "delete", "admin", "replication")
ADMIN_USER: Final = "admin"

BUILTIN_ROLES: Final[dict[str, dict[str, Any]]] = {
    "admin": {"superuser": True, "grants": [{"actions": list(ACTIONS), "pattern": "*"}]},
    "writer": {"superuser": False, "grants": [{"actions": ["read", "write", "delete"], "pattern": "*"}]},
    "reader": {"superuser": False, "grants": [{"actions": ["read"], "pattern": "*"}]},
    "replication": {"superuser": False, "grants": [{"actions": ["replication"], "pattern": "*"}]},
}


def user_key(name: str) -> str:
    return USERS_PREFIX + name


def role_key(name: str) -> str:
    return ROLES_PREFIX + name


def apikey_key(key_id: str) -> str:
    return APIKEYS_PREFIX + key_id


def encode(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def decode(value: bytes) -> dict[str, Any]:
    document = orjson.loads(value)
    if not isinstance(document, dict):
        raise ValueError("catalog entry is not a JSON object")
    return document


def user_document(name: str, password_hash: str, roles: list[str], now_ms: int) -> dict[str, Any]:
    return {
        "name": name,
        "password_hash": password_hash,
        "roles": roles,
        "can_login": True,
        "locked_reason": None,
        "token_generation": 1,
        "created_at_ms": now_ms,
    }


def bootstrap_documents(
    admin_password_hash: str,
    jwt_keys: dict[str, Any],  # signing_keys.initial_document: sealed under the cluster key
    now_ms: int,
    policy: auth_policy.AuthPolicy,
    replication_user: tuple[str, str] | None = None,  # (name, password hash)
) -> list[tuple[str, bytes]]:
    """The (key, value) pairs initdb writes, in one transaction, marker last."""
    pairs = [(role_key(name), encode({"name": name, **role})) for name, role in BUILTIN_ROLES.items()]
    pairs.append((user_key(ADMIN_USER), encode(user_document(ADMIN_USER, admin_password_hash, ["admin"], now_ms))))
    if replication_user is not None:
        name, password_hash = replication_user
        pairs.append((user_key(name), encode(user_document(name, password_hash, ["replication"], now_ms))))
    pairs.append((JWT_KEYS_KEY, encode(jwt_keys)))
    pairs.append((HBA_KEY, encode({"rules": hba.DEFAULT_RULES})))
    pairs.append((AUTH_KEY, encode(policy.to_document())))
    pairs.append((CATALOG_MARKER_KEY, encode({"catalog_version": CATALOG_VERSION})))
    return pairs


def literal_head(pattern: str) -> str:
    """The text every key a shell-style pattern matches starts with: `app:*` -> `app:`."""
    cut = min((index for index in (pattern.find(c) for c in "*?[") if index >= 0), default=len(pattern))
    return pattern[:cut]


@dataclass(frozen=True, slots=True)
class Grant:
    actions: frozenset[str]
    pattern: str  # shell-style, case-sensitive: `app:*`, `user:?`, `[ab]*`


def _matchers(grants: tuple[Grant, ...]) -> dict[str, Callable[[str], object]]:
    """One compiled regex per action covering all its patterns: a check is one match call,
    however many roles and grants the user holds (measured in bench/results/RESULTS-node.md)."""
    by_action: dict[str, list[str]] = {}
    for grant in grants:
        for action in grant.actions:
            by_action.setdefault(action, []).append(fnmatch.translate(grant.pattern))
    return {action: re.compile("|".join(patterns)).match for action, patterns in by_action.items()}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as, with the grants of all its roles resolved."""

    name: str
    superuser: bool
    roles: tuple[str, ...]
    grants: tuple[Grant, ...]
    token_generation: int
    created_at_ms: int = 0  # which incarnation of the user name (API keys belong to one)
    _match: dict[str, Callable[[str], object]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_match", _matchers(self.grants))

    def has_action(self, action: str) -> bool:
        """Holds `action` on some pattern (for actions that are not about keys: replication)."""
        return action in self._match

    def can(self, action: str, key: str) -> bool:
        if self.superuser:
            return True
        if key.startswith(SYS_PREFIX):
            return False  # catalogs are for superusers only
        match = self._match.get(action)
        return match is not None and match(key) is not None


def resolve_principal(user: dict[str, Any], roles: dict[str, dict[str, Any]]) -> Principal:
    grants: list[Grant] = []
    superuser = False
    for role_name in user.get("roles", []):
        role = roles.get(role_name)
        if role is None:
            continue  # a role that was dropped grants nothing
        superuser = superuser or bool(role.get("superuser"))
        grants.extend(Grant(frozenset(g["actions"]), g["pattern"]) for g in role.get("grants", []))
    return Principal(
        name=user["name"],
        superuser=superuser,
        roles=tuple(user.get("roles", [])),
        grants=tuple(grants),
        token_generation=int(user.get("token_generation", 1)),
        created_at_ms=int(user.get("created_at_ms", 0)),
    )
