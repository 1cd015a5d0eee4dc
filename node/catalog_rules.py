"""The catalog's rules that are not about one document's shape: token generations, the role
cascade, who may log in, and the API key format. No I/O and no clock (callers pass `now`);
only minting a key draws random bytes.

Kept apart from the code that reads and writes the catalog (catalog_store.py,
catalog_changes.py) and from authentication (auth.py), so the admin API that mints an API
key and the authenticator that parses one share one format, and each rule is tested on its
own (tests/unit/test_catalog_rules.py).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Final, NamedTuple

# -- token generations ------------------------------------------------------------------

# Fields of a user document whose change must end the user's live sessions.
SESSION_FIELDS: Final = ("password_hash", "locked_reason", "can_login", "valid_until")


def fresh_generation(revision: int) -> int:
    """A token generation above every store revision so far, so above every generation any
    incarnation of any user ever had: tokens issued before it stop working."""
    return revision + 1


def ends_sessions(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """A new user document (a raw write) ends the user's sessions when it changes a password,
    a lock or the right to log in, or when there was no usable user before it."""
    return current is None or any(new.get(field) != current.get(field) for field in SESSION_FIELDS)


def may_log_in(user: dict[str, Any], now_s: float) -> bool:
    """Not locked, not past `valid_until`, and allowed to log in at all."""
    valid_until = user.get("valid_until")
    expired = valid_until is not None and now_s >= valid_until
    return bool(user.get("can_login", True)) and not user.get("locked_reason") and not expired


# -- the role cascade -------------------------------------------------------------------


def without_role(users: list[tuple[int, dict[str, Any]]], role: str) -> list[tuple[int, dict[str, Any]]]:
    """(version read, changed document) of every user holding `role`, with it removed: dropping a
    role drops its memberships too (PostgreSQL's DROP ROLE), so a role created later under the
    same name grants nothing to the former holders."""
    return [
        (version, {**user, "roles": [held for held in user["roles"] if held != role]})
        for version, user in users
        if role in user["roles"]
    ]


# -- API keys ---------------------------------------------------------------------------

API_KEY_PREFIX: Final = "kv_"
NO_EXPIRY_S: Final = 2**62
_KEY_ID_BYTES: Final = 6
_SECRET_BYTES: Final = 24  # 192 random bits


class ApiKeyToken(NamedTuple):
    key_id: str
    secret: str


def is_api_key(token: str) -> bool:
    """An API key rather than a JWT (whose first part never starts with the prefix)."""
    return token.startswith(API_KEY_PREFIX)


def api_key_digest(secret: str) -> str:
    """API key secrets are 192 random bits: a plain SHA-256 is enough (and fast on every request)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def format_api_key(key_id: str, secret: str) -> str:
    return f"{API_KEY_PREFIX}{key_id}_{secret}"


def parse_api_key(token: str) -> ApiKeyToken | None:
    """`kv_<id>_<secret>` split into its parts; None when the id cannot name a key."""
    key_id, _, secret = token.removeprefix(API_KEY_PREFIX).partition("_")
    return ApiKeyToken(key_id, secret) if key_id.isalnum() else None


def mint_api_key(
    name: str,
    user: dict[str, Any],
    cidrs: list[str],
    expires_at: int | None,
    now_ms: int,
) -> tuple[dict[str, Any], str]:
    """A new API key for `user`: (its catalog document, the token shown once). Only the
    secret's digest is stored, never the secret."""
    key_id, secret = secrets.token_hex(_KEY_ID_BYTES), secrets.token_urlsafe(_SECRET_BYTES)
    document = {
        "id": key_id,
        "name": name,
        "user": user["name"],
        "user_created_at_ms": user["created_at_ms"],  # this incarnation of the user only
        "cidrs": cidrs,
        "expires_at": expires_at,
        "created_at_ms": now_ms,
        "secret_sha256": api_key_digest(secret),
    }
    return document, format_api_key(key_id, secret)


def secret_matches(key: dict[str, Any], secret: str) -> bool:
    return hmac.compare_digest(key["secret_sha256"], api_key_digest(secret))


def key_expires_at(key: dict[str, Any]) -> int:
    """Epoch seconds the key stops working (NO_EXPIRY_S when it never does)."""
    return int(key.get("expires_at") or NO_EXPIRY_S)


def key_networks(key: dict[str, Any]) -> tuple[IPv4Network | IPv6Network, ...]:
    """The networks the key may be used from; empty means anywhere."""
    return tuple(ipaddress.ip_network(cidr) for cidr in key.get("cidrs", []))


def key_incarnation(key: dict[str, Any]) -> tuple[int, int]:
    """The range the user's `created_at_ms` must lie in for the key to act as them: the key
    belongs to the incarnation of the user it was made for, not to a later user of that name.
    Keys made before keys recorded it: the user must predate the key."""
    user_created_at_ms = key.get("user_created_at_ms")
    if user_created_at_ms is None:
        return 0, key["created_at_ms"]
    return user_created_at_ms, user_created_at_ms


def address_in(address: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    """`address` lies in one of an API key's networks (an unparsable address in none)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
