"""JWT login tokens: issued and verified with the catalog's signing keys.

A token names its signing key (`kid`) and the user's `token_generation`; whether that
generation is still the user's is the authenticator's check (auth.py), since it needs the
user. The keys are sealed in `_sys.settings:jwt_keys` under the cluster key
(cluster_key.py) and opened here again only when that document changes, not on every
catalog change. A damaged document leaves the last good keys in force.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import jwt

from . import catalog, metrics, signing_keys
from .catalog_documents import DocumentError
from .catalog_store import CatalogStore
from .cluster_key import ClusterKey, ClusterKeyError
from .errors import Unauthorized

log = logging.getLogger(__name__)

JWT_ALGORITHM: Final = "HS256"
_REQUIRED_CLAIMS: Final = ["exp", "iat", "sub", "gen"]


def _claims(claims: dict[str, Any]) -> tuple[str, int, int]:
    """(sub, gen, exp) of a correctly signed token, checked in this one place: a claim of the
    wrong type is an invalid token (401), never an error deeper in (a 500). PyJWT has checked
    that they are present and that exp and iat are numbers."""
    sub, gen, exp = claims["sub"], claims["gen"], claims["exp"]
    if not isinstance(sub, str) or not sub:
        raise jwt.InvalidTokenError("claim 'sub' must be a user name")
    if not isinstance(gen, int) or isinstance(gen, bool):
        raise jwt.InvalidTokenError("claim 'gen' must be an integer")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise jwt.InvalidTokenError("claim 'exp' must be a number")
    return sub, gen, int(exp)


class Tokens:
    def __init__(self, documents: CatalogStore, cluster_key: ClusterKey) -> None:
        self._documents = documents
        self._cluster_key = cluster_key
        # (epoch, version, (current kid, kid -> opened secret)) of the last good signing keys
        self._signing: tuple[int, int, tuple[str, dict[str, str]]] | None = None

    def _keys(self) -> tuple[str, dict[str, str]]:
        """(current kid, kid -> secret): the catalog's keys opened with the cluster key, opened
        again only when their document changed (not on every catalog change)."""
        epoch = self._documents.epoch
        cached = self._signing
        if cached is not None and cached[0] == epoch:
            return cached[2]
        try:
            found = self._documents.document(catalog.JWT_KEYS_KEY)
        except DocumentError:
            # Keep the last good keys. With none (damaged since before this start), sign with a
            # key of this node's own, so an administrator can log in here and repair the
            # document (`kvctl jwt-key rotate`); its tokens are valid on this node only.
            if cached is None:
                log.critical(
                    "the signing keys in %s are damaged; signing with a temporary key of this node until an "
                    "administrator runs kvctl jwt-key rotate",
                    catalog.JWT_KEYS_KEY,
                )
                kid, secret = signing_keys.new_key()
                cached = (epoch, -1, (kid, {kid: secret}))
            self._signing = (epoch, cached[1], cached[2])
            return cached[2]
        if found is None:
            raise Unauthorized("this node has no token signing key yet (catalog not bootstrapped)")
        version, document = found
        if cached is not None and cached[1] == version:
            opened = cached[2]  # another catalog document changed
        else:
            try:
                opened = (document["current"], signing_keys.open_secrets(document, self._cluster_key))
            except ClusterKeyError as error:
                # Sealed under another key than this node's (the start checks this, so only a
                # document written since): its tokens are refused here, never accepted unchecked.
                # Logged once per version of the document: the version is remembered below.
                log.critical("%s; tokens signed with it are refused on this node", error)
                if cached is None:
                    raise Unauthorized("this node cannot open the cluster's token signing keys; see its log") from None
                opened = cached[2]
        self._signing = (epoch, version, opened)
        return opened

    def issue(self, username: str, token_generation: int, ttl_s: int) -> tuple[str, int]:
        """(token, expires_at_s) for `username` at `token_generation`, valid for `ttl_s`."""
        kid, secrets_by_kid = self._keys()
        now = int(time.time())
        expires_at = now + ttl_s
        claims = {"sub": username, "gen": token_generation, "iat": now, "exp": expires_at}
        token = jwt.encode(claims, secrets_by_kid[kid], algorithm=JWT_ALGORITHM, headers={"kid": kid})
        return token, expires_at

    def verify(self, token: str) -> tuple[str, int, int]:
        """(user, token generation, expires_at_s) of a token this cluster signed; Unauthorized else."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            secret = self._keys()[1].get(kid) if isinstance(kid, str) else None
            if secret is None:
                raise jwt.InvalidTokenError("unknown signing key")
            claims = jwt.decode(token, secret, algorithms=[JWT_ALGORITHM], options={"require": _REQUIRED_CLAIMS})
            sub, gen, exp = _claims(claims)
        except jwt.ExpiredSignatureError:
            metrics.AUTH_FAILURES.labels("expired").inc()
            raise Unauthorized("token expired; log in again") from None
        except jwt.InvalidTokenError as error:
            # PyJWT's reasons name what is wrong (a claim, the signature, the algorithm), never a key.
            metrics.AUTH_FAILURES.labels("invalid_token").inc()
            raise Unauthorized(f"invalid token: {error}") from None
        return sub, gen, exp
