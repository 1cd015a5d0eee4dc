"""Token signing keys (`_sys.settings:jwt_keys`) and their rotation. Pure.

    {"current": kid, "keys": {kid: {"secret", "created_at_ms", "retired_at_ms"?}}}

New tokens are signed with the current key; a token names its key (`kid`), so after a
rotation tokens signed with a retired key stay valid until they expire. A retired key
is dropped at a later rotation once every token it signed must have expired. An
emergency rotation (a leaked secret) drops every other key at once, which logs out
everyone.
"""

from __future__ import annotations

import secrets
from typing import Any


def new_key() -> tuple[str, str]:
    """(kid, secret) for a fresh HS256 signing key: 288 random bits."""
    return secrets.token_hex(8), secrets.token_urlsafe(36)


def initial_document(kid: str, secret: str, now_ms: int) -> dict[str, Any]:
    return {"current": kid, "keys": {kid: {"secret": secret, "created_at_ms": now_ms}}}


def rotate(document: dict[str, Any], now_ms: int, token_ttl_s: int, drop_old: bool) -> dict[str, Any]:
    """A new current key; the old one retires (or, with drop_old, every old key goes)."""
    kid, secret = new_key()
    keys: dict[str, dict[str, Any]] = {}
    if not drop_old:
        for old_kid, key in document["keys"].items():
            retired_at_ms = key.get("retired_at_ms") or now_ms
            if retired_at_ms + token_ttl_s * 1000 > now_ms:  # it may still have live tokens
                keys[old_kid] = {**key, "retired_at_ms": retired_at_ms}
    keys[kid] = {"secret": secret, "created_at_ms": now_ms}
    return {"current": kid, "keys": keys}


def public(document: dict[str, Any]) -> dict[str, Any]:
    """What an administrator sees: never a secret."""
    keys = [
        {"kid": kid, "current": kid == document["current"], **{k: v for k, v in key.items() if k != "secret"}}
        for kid, key in document["keys"].items()
    ]
    keys.sort(key=lambda key: key["created_at_ms"], reverse=True)
    return {"current": document["current"], "keys": keys}
