"""Token signing keys (`_sys.settings:jwt_keys`) and their rotation. Pure.

    {"current": kid, "keys": {kid: {"sealed", "created_at_ms", "retired_at_ms"?}}}

`sealed` is the HS256 secret encrypted under the cluster key (cluster_key.py): the document
is replicated like the rest of the catalog, and whoever reads it without the key (a
replication user's base backup, a raw GET by a superuser) finds no usable secret. Catalogs
made before sealing hold `secret` in the clear instead; such keys still verify, and a
primary with a cluster key seals them at its start (`reseal`, which also moves secrets
sealed under the previous cluster key to the current one during a key rotation).

New tokens are signed with the current key; a token names its key (`kid`), so after a
rotation tokens signed with a retired key stay valid until they expire. A retired key
is dropped at a later rotation once every token it signed must have expired. An
emergency rotation (a leaked secret) drops every other key at once, which logs out
everyone.
"""

from __future__ import annotations

import secrets
from typing import Any

from .cluster_key import ClusterKey

PRIVATE_FIELDS = ("secret", "sealed")


def new_key() -> tuple[str, str]:
    """(kid, secret) for a fresh HS256 signing key: 288 random bits."""
    return secrets.token_hex(8), secrets.token_urlsafe(36)


def _entry(sealer: ClusterKey, kid: str, secret: str, now_ms: int) -> dict[str, Any]:
    return {"sealed": sealer.seal(kid, secret), "created_at_ms": now_ms}


def initial_document(sealer: ClusterKey, now_ms: int) -> dict[str, Any]:
    kid, secret = new_key()
    return {"current": kid, "keys": {kid: _entry(sealer, kid, secret, now_ms)}}


def rotate(
    document: dict[str, Any], now_ms: int, token_ttl_s: int, drop_old: bool, sealer: ClusterKey
) -> dict[str, Any]:
    """A new current key; the old one retires (or, with drop_old, every old key goes)."""
    kid, secret = new_key()
    keys: dict[str, dict[str, Any]] = {}
    if not drop_old:
        for old_kid, key in document["keys"].items():
            retired_at_ms = key.get("retired_at_ms") or now_ms
            if retired_at_ms + token_ttl_s * 1000 > now_ms:  # it may still have live tokens
                keys[old_kid] = {**key, "retired_at_ms": retired_at_ms}
    keys[kid] = _entry(sealer, kid, secret, now_ms)
    return {"current": kid, "keys": keys}


def open_secrets(document: dict[str, Any], sealer: ClusterKey) -> dict[str, str]:
    """kid -> secret; ClusterKeyError when the key does not open one of them (another cluster's key)."""
    return {
        kid: key["secret"] if "secret" in key else sealer.open(kid, key["sealed"])
        for kid, key in document["keys"].items()
    }


def reseal(document: dict[str, Any], sealer: ClusterKey) -> dict[str, Any] | None:
    """The document with every secret sealed under the current cluster key, when one is in the
    clear (an upgrade) or sealed under the previous key (a key rotation); else None."""
    keys, changed = {}, False
    for kid, key in document["keys"].items():
        if "secret" in key or not sealer.is_current(kid, key["sealed"]):
            secret = key["secret"] if "secret" in key else sealer.open(kid, key["sealed"])
            rest = {name: value for name, value in key.items() if name not in PRIVATE_FIELDS}
            key, changed = {**rest, "sealed": sealer.seal(kid, secret)}, True
        keys[kid] = key
    return {**document, "keys": keys} if changed else None


def public(document: dict[str, Any]) -> dict[str, Any]:
    """What an administrator sees: never a secret, sealed or not."""
    keys = [
        {
            "kid": kid,
            "current": kid == document["current"],
            **{k: v for k, v in key.items() if k not in PRIVATE_FIELDS},
        }
        for kid, key in document["keys"].items()
    ]
    keys.sort(key=lambda key: key["created_at_ms"], reverse=True)
    return {"current": document["current"], "keys": keys}
