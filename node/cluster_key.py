"""The cluster key: 32 random bytes every node of a cluster is given out of band, which seals
the token signing secrets in the catalog (`_sys.settings:jwt_keys`).

The catalog is replicated whole (a replica authenticates the same users), so anything in it
reaches whoever holds the `replication` role: a base backup or the WAL stream. A signing
secret there in the clear let a replication user mint an admin token. Sealed with AES-256-GCM
under a key that never enters the catalog, the WAL or a base backup, a secret is only usable
by a node started with the key: every replica verifies tokens and, once promoted, issues
them; a replication user holding the base backup has ciphertext only.

Where a node finds the key, first found wins: `KVSTORE_CLUSTER_KEY` (the environment only,
never a flag or config.toml), the `cluster_key_file` setting, `<data_dir>/cluster.key`. A
primary that finds none generates `<data_dir>/cluster.key` (mode 0600) and logs where it is
(copy it to every replica), unless its catalog already holds secrets sealed under a key: a
new one could not open them. Any other node that finds none refuses to start (a replica
could neither verify tokens nor take over as primary). A key file must be private (no group
or other access).

Rotating the key: every node gets the new key and, in `KVSTORE_CLUSTER_KEY_PREVIOUS`, the
old one; a node opens secrets sealed under either, and a primary re-seals the old ones under
the new key at its start. Once it has, the previous key can go.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .fsutil import atomic_write

log = logging.getLogger(__name__)

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
DATA_DIR_KEY_FILE: Final = "cluster.key"
# One purpose, one derived key: the same cluster key may seal other things later.
_SIGNING_SECRETS_INFO: Final = b"kvstore++ jwt signing secrets v1"


class ClusterKeyError(Exception):
    """No usable cluster key, or one that does not open what the catalog holds; says what to do."""


def decode_key(text: str) -> bytes | None:
    """32 bytes written as 64 hex digits or base64 (standard or URL-safe, padding optional); None
    for anything else. The archive key (archive/crypto.py) is written the same way."""
    text = text.strip()
    raw: bytes | None = None
    if len(text) == 2 * KEY_BYTES:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raw = None
    return raw if raw is not None and len(raw) == KEY_BYTES else None


def parse(text: str, source: str) -> bytes:
    raw = decode_key(text)
    if raw is None:
        # Never echo the text: it is (meant to be) a secret.
        raise ClusterKeyError(
            f"{source}: the cluster key must be {KEY_BYTES} random bytes written as {2 * KEY_BYTES} hex digits "
            "or base64 (make one with: openssl rand -hex 32)"
        )
    return raw


def generate_text() -> str:
    return secrets.token_hex(KEY_BYTES)


def read_file(path: Path) -> bytes:
    """A key file's key; refused when others than its owner may read it (as ssh does)."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise ClusterKeyError(f"cluster key file {path}: {error.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ClusterKeyError(
            f"cluster key file {path} is mode {stat.S_IMODE(mode):04o}: others may read it; "
            f"make it private with: chmod 600 {path}"
        )
    return parse(path.read_text(), f"cluster key file {path}")


def _aead(key: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_SIGNING_SECRETS_INFO).derive(key))


class ClusterKey:
    """Seals and opens signing secrets; `sealed` text is base64url(nonce || ciphertext+tag).
    Seals with the current key; opens with it or, during a rotation, the previous one."""

    def __init__(self, key: bytes, previous: bytes | None = None) -> None:
        self._aead = _aead(key)
        self._previous = None if previous is None else _aead(previous)

    def __repr__(self) -> str:
        return "ClusterKey(<hidden>)"

    def seal(self, kid: str, secret: str) -> str:
        """The kid is authenticated with it: a sealed secret cannot be moved to another kid."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), kid.encode())
        return base64.urlsafe_b64encode(sealed).decode()

    def open(self, kid: str, sealed: str) -> str:
        for aead in (self._aead, self._previous):
            secret = None if aead is None else _open(aead, kid, sealed)
            if secret is not None:
                return secret
        raise ClusterKeyError(
            f"the cluster key does not open signing key {kid!r}: this node was given another cluster's key "
            "(or the sealed secret is damaged); give it the key every node of this cluster has (during a key "
            "rotation, the old one in KVSTORE_CLUSTER_KEY_PREVIOUS)"
        )

    def is_current(self, kid: str, sealed: str) -> bool:
        """Sealed under the current key (not the previous one): nothing to re-seal."""
        return _open(self._aead, kid, sealed) is not None


def _open(aead: AESGCM, kid: str, sealed: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
        return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], kid.encode()).decode()
    except (InvalidTag, binascii.Error, ValueError):
        return None


def load(
    env_text: str | None, key_file: Path | None, previous_text: str | None, data_dir: Path, may_generate: bool
) -> ClusterKey:
    """The node's cluster key (see the module docstring for where it is looked for)."""
    previous = parse(previous_text, "KVSTORE_CLUSTER_KEY_PREVIOUS") if previous_text else None
    if env_text:
        return ClusterKey(parse(env_text, "KVSTORE_CLUSTER_KEY"), previous)
    if key_file is not None:
        return ClusterKey(read_file(key_file), previous)
    own = data_dir / DATA_DIR_KEY_FILE
    if own.exists():
        return ClusterKey(read_file(own), previous)
    if not may_generate:
        raise ClusterKeyError(
            "this node has no cluster key, and it is a replica or its catalog's signing secrets are sealed under "
            f"one: give it the key of its cluster (the {DATA_DIR_KEY_FILE} in the data directory of the node that "
            "generated it, or the one the cluster was started with) in KVSTORE_CLUSTER_KEY or a file named by "
            "cluster_key_file (mode 0600)"
        )
    atomic_write(own, (generate_text() + "\n").encode())  # mode 0600
    log.warning(
        "generated a cluster key; copy it to every replica (KVSTORE_CLUSTER_KEY or cluster_key_file): "
        "without it they cannot verify tokens or take over",
        extra={"path": str(own)},
    )
    return ClusterKey(parse(own.read_text(), str(own)))
