"""Making JWTs by hand for tests: correctly signed ones with odd claims, and forged ones.

Tokens are assembled here (base64url JSON, HMAC from the standard library) rather than with
PyJWT's encoder, which refuses some of what an attacker would send (empty or PEM-looking
HMAC keys, non-JSON-object payloads).

`signing_secret` is the one place that knows how a test gets a node's real signing secret:
the sealed document read raw by the superuser, opened with the harness's cluster key
(nothing else can read it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

import jwt

from kvstore.node import cluster_key, signing_keys
from support.harness import CLUSTER_KEY, NodeProcess

_HMAC_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assemble(header: dict[str, Any], payload: Any, key: bytes | None) -> str:
    """A compact JWS of `payload` (any JSON, or raw text), signed with HMAC under `key` as
    `header["alg"]` names it; a non-HMAC alg gets random signature bytes (a key the node
    cannot have); `key` None gives an empty signature."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(text.encode())}"
    if key is None:
        signature = b""
    elif header.get("alg") in _HMAC_DIGESTS:
        signature = hmac.new(key, signing_input.encode(), _HMAC_DIGESTS[header["alg"]]).digest()
    else:
        signature = secrets.token_bytes(256)
    return f"{signing_input}.{b64url(signature)}"


def _jwt_keys(node: NodeProcess) -> dict[str, Any]:
    with node.client() as admin:
        response = admin.get("/v1/kv/_sys.settings:jwt_keys")
        response.raise_for_status()
    document: dict[str, Any] = json.loads(response.content)
    return document


def signing_secret(node: NodeProcess, kid: str) -> str:
    """The secret of signing key `kid`, opened with the test cluster key."""
    opened = signing_keys.open_secrets(_jwt_keys(node), cluster_key.ClusterKey(cluster_key.parse(CLUSTER_KEY, "test")))
    return opened[kid]


def signing_key(node: NodeProcess) -> tuple[str, bytes]:
    """(kid, secret) of the key the node signs tokens with now."""
    kid = _jwt_keys(node)["current"]
    return kid, signing_secret(node, kid).encode()


def resigned(node: NodeProcess, token: str, claims: Any, header: dict[str, Any] | None = None) -> str:
    """`claims` (or a payload of any shape) correctly signed with the node's key, under the
    header of `token` (a real login token) changed by `header`."""
    kid, secret = signing_key(node)
    base = {**jwt.get_unverified_header(token), "kid": kid, **(header or {})}
    return assemble(base, claims, secret)
