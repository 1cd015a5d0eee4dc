"""The catalog as a node starts: made on a new cluster (initdb's superuser), its signing
secrets checked against the cluster key and sealed under it, and settings that an older
catalog lacks written from this node's configuration."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import auth_policy, catalog, cluster_key, signing_keys
from .auth import Authenticator
from .catalog_changes import CatalogChanges
from .catalog_store import CatalogStore, DamagedDocument
from .checkpoint import Checkpointer
from .config import ConfigError, Settings
from .engine import Engine
from .errors import Conflict
from .fsutil import atomic_write
from .writes import TxnOp, now_ms

log = logging.getLogger(__name__)

INITIAL_PASSWORD_FILE = "initial-admin-password"

Spawn = Callable[[str, Callable[[], Awaitable[object]]], None]


def signing_keys_sealed(catalog_store: CatalogStore) -> bool:
    """The catalog holds signing secrets sealed under some cluster key (a new one cannot open them)."""
    value = catalog_store.stored(catalog.JWT_KEYS_KEY)
    try:
        document = catalog.decode(value) if value is not None else {}
        return any("sealed" in key for key in document.get("keys", {}).values())
    except (ValueError, AttributeError, TypeError):
        return False  # damaged: catalog_health reports it; a rotation repairs it


class CatalogStart:
    def __init__(
        self,
        settings: Settings,
        root: Path,
        engine: Engine,
        checkpointer: Checkpointer,
        catalog_store: CatalogStore,
        catalog_changes: CatalogChanges,
        auth: Authenticator,
        spawn: Spawn,
    ) -> None:
        self._settings = settings
        self._root = root
        self._engine = engine
        self._checkpointer = checkpointer
        self._store = catalog_store
        self._changes = catalog_changes
        self._auth = auth
        self._spawn = spawn

    def exists(self) -> bool:
        return self._store.exists(catalog.CATALOG_MARKER_KEY)

    async def bootstrap(self) -> None:
        """A new cluster's catalog: the superuser (its password given or generated), the
        replication user when configured, the signing keys and the auth policy."""
        password, source = self._initial_admin_password()
        loop = asyncio.get_running_loop()
        password_hash = await loop.run_in_executor(None, self._auth.passwords.hash, password)
        if source == "generated":
            # Saved before the catalog commits: a crash in between must not leave a
            # superuser whose password nobody ever saw.
            path = self._root / INITIAL_PASSWORD_FILE
            await loop.run_in_executor(None, atomic_write, path, (password + "\n").encode())
        replication_user = None
        settings = self._settings
        if settings.replication_user and settings.replication_password:  # as PostgreSQL's images do
            replication_hash = await loop.run_in_executor(
                None, self._auth.passwords.hash, settings.replication_password
            )
            replication_user = (settings.replication_user, replication_hash)
        jwt_keys = signing_keys.initial_document(self._auth.cluster_key, now_ms())
        documents = catalog.bootstrap_documents(
            password_hash, jwt_keys, now_ms(), settings.initial_auth_policy, replication_user
        )
        await self._engine.txn([TxnOp("set", key, value) for key, value in documents])
        await self._checkpointer.checkpoint("initdb")
        if source == "generated":
            # Printed once, like initdb's; never logged.
            print(
                f"\nkvstored: created superuser 'admin' with a generated password: {password}\n"
                f"kvstored: it is also in {self._root / INITIAL_PASSWORD_FILE} (mode 0600); "
                "delete that file once you have it.\n",
                file=sys.stdout,
                flush=True,
            )
        log.info("catalog bootstrapped", extra={"superuser": catalog.ADMIN_USER, "password_source": source})

    def check_signing_keys(self) -> tuple[dict[str, Any], int] | None:
        """A node given another cluster's key refuses to start (ConfigError): it could verify no
        token, and a promoted one would sign tokens no other node takes. Returns the re-sealed
        document (and the version it replaces) when the catalog holds clear secrets (made
        before sealing) or secrets sealed under the previous key: a primary writes it once it
        takes writes (`seal_signing_keys`)."""
        try:
            found = self._store.read(catalog.JWT_KEYS_KEY)
        except DamagedDocument:
            return None  # catalog_health reports it; a rotation repairs it
        if found is None:
            return None
        try:
            signing_keys.open_secrets(found[1], self._auth.cluster_key)
        except cluster_key.ClusterKeyError as error:
            raise ConfigError(str(error)) from None
        sealed = signing_keys.reseal(found[1], self._auth.cluster_key)
        return None if sealed is None else (sealed, found[0])

    async def seal_signing_keys(self, sealed: dict[str, Any], version: int) -> None:
        try:
            await self._changes.put(catalog.JWT_KEYS_KEY, sealed, version)
        except Conflict:
            return  # rotated meanwhile: the rotation wrote sealed keys
        log.warning(
            "token signing secrets sealed under the cluster key (they were in the clear, or under the previous "
            "key); older WAL and snapshots still hold the old form: rotate them (kvctl jwt-key rotate --drop-old) "
            "if they may have been read",
            extra={"key": catalog.JWT_KEYS_KEY},
        )

    def complete(self, takes_writes: bool) -> None:
        """A catalog made before `_sys.settings:auth` existed gets it from this node's settings
        (the policy in force until now); settings the catalog overrides are pointed out."""
        seed = self._settings.initial_auth_policy
        if not self._store.exists(catalog.AUTH_KEY):
            if takes_writes:
                # In the background: with synchronous replication the write waits for a replica.
                self._spawn("catalog-upgrade", lambda: self._write_auth_policy(seed))
            return
        in_force, default = self._auth.policy(), auth_policy.AuthPolicy()
        overridden = [
            name
            for name in auth_policy.FIELDS
            if getattr(seed, name) != getattr(default, name) and getattr(seed, name) != getattr(in_force, name)
        ]
        if overridden:
            log.warning(
                "these settings only seed a new cluster's catalog; %s holds other values, which are in force: %s "
                "(change them with kvctl settings set)",
                catalog.AUTH_KEY,
                ", ".join(overridden),
            )

    async def _write_auth_policy(self, policy: auth_policy.AuthPolicy) -> None:
        try:
            await self._changes.put(catalog.AUTH_KEY, policy.to_document(), None)
        except Conflict:
            return  # written meanwhile, by an administrator or a newer primary
        log.info("auth policy written to the catalog from this node's settings", extra={"key": catalog.AUTH_KEY})

    def _initial_admin_password(self) -> tuple[str, str]:
        if self._settings.admin_password:
            return self._settings.admin_password, "KVSTORE_ADMIN_PASSWORD"
        if self._settings.admin_password_file is not None:
            text = Path(self._settings.admin_password_file).read_text().strip()
            if not text:
                raise ValueError(f"admin password file {self._settings.admin_password_file} is empty")
            return text, "admin_password_file"
        return secrets.token_urlsafe(18), "generated"
