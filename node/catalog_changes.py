"""Changes to the catalog that keep it consistent, whichever way they come.

The admin API (api/users.py, api/security.py) and a superuser's raw writes to `_sys.*`
keys through the data API both go through here, so the same rules hold for both:

- every document written is checked (catalog_documents.py) and what it names exists
  (a user's roles, an API key's user); a bad one is a 400 that says what is wrong;
- a user's API keys go with the user, and a role's memberships with the role, in the
  same transaction (PostgreSQL's DROP ROLE), so neither outlives its owner;
- what must end a user's sessions (a new password, a lock, losing the right to log in,
  deletion) moves the user's token generation past every value it ever had; grants and
  revokes do not, since privileges are resolved from the catalog on every request;
- the built-in roles are fixed, and the documents a node cannot work without (the
  catalog marker, the signing keys) cannot be deleted.

Documents are read, and written with compare-and-set on the version read, through
catalog_store.py; the rules that need no I/O (generations, the role cascade) are
catalog_rules.py's.
"""

from __future__ import annotations

from typing import Any, Final

from . import catalog, catalog_documents, catalog_rules, idempotency, signing_keys
from .catalog_documents import DocumentError
from .catalog_store import CatalogStore
from .cluster_key import ClusterKey, ClusterKeyError
from .engine import Engine
from .errors import BadRequest, Conflict, NotFound, PreconditionFailed
from .writes import TxnOp, WriteResult

REQUIRED_KEYS: Final = (catalog.CATALOG_MARKER_KEY, catalog.JWT_KEYS_KEY)


class InvalidDocument(BadRequest):
    code = "invalid_catalog_document"


class CatalogChanges:
    def __init__(self, engine: Engine, store: CatalogStore, cluster_key: ClusterKey) -> None:
        """`store` reads and compare-and-sets one document; `engine` makes the transactions
        that take a user's or a role's dependents along, and the raw writes of the data API."""
        self._engine = engine
        self._store = store
        self._cluster_key = cluster_key

    @property
    def store(self) -> CatalogStore:
        """Where the admin API reads what it changes (the versions it compare-and-sets against)."""
        return self._store

    def _version(self, key: str, missing: str) -> int:
        version = self._store.version(key)
        if version is None:
            raise NotFound(missing)
        return version

    def fresh_generation(self) -> int:
        return catalog_rules.fresh_generation(self._store.revision)

    # -- writes the admin API makes ------------------------------------------------------

    async def put(self, key: str, document: dict[str, Any], version: int | None) -> WriteResult:
        """Create (version None) or compare-and-set one document, checked like any other write."""
        return await self._store.put(key, self.checked(key, catalog.encode(document)), version)

    def checked(self, key: str, value: bytes) -> bytes:
        """`value` if it is a valid document for `key` whose references exist; else a 400."""
        try:
            document = catalog_documents.parse(key, value)
        except DocumentError as error:
            raise InvalidDocument(f"{key}: {error}", key=key) from None
        if key.startswith(catalog.USERS_PREFIX):
            missing = [role for role in document["roles"] if not self._store.exists(catalog.role_key(role))]
            if missing:
                raise InvalidDocument(f"{key}: unknown role(s) {', '.join(missing)}", key=key)
        elif key.startswith(catalog.APIKEYS_PREFIX):
            if not self._store.exists(catalog.user_key(document["user"])):
                raise InvalidDocument(f"{key}: unknown user {document['user']!r}", key=key)
        elif key.startswith(catalog.ROLES_PREFIX) and document["name"] in catalog.BUILTIN_ROLES:
            raise InvalidDocument(f"role {document['name']!r} is built in and cannot be changed", key=key)
        return value

    async def delete_user(self, name: str, version: int | None = None) -> tuple[list[str], WriteResult]:
        """Delete a user (a damaged document too) and its API keys in one transaction; returns the
        keys' names."""
        current = self._version(catalog.user_key(name), f"no user {name!r}")
        keys = [key for _, key in self._store.all(catalog.APIKEYS_PREFIX) if key["user"] == name]
        ops = [TxnOp("del", catalog.user_key(name), if_version=current if version is None else version)]
        ops += [TxnOp("del", catalog.apikey_key(key["id"])) for key in keys]
        try:
            _, result = await self._engine.txn(ops)
        except PreconditionFailed:
            if version is not None:
                raise  # the caller's own If-Match
            raise Conflict(f"user {name!r} was changed meanwhile; retry") from None
        return [key["name"] for key in keys], result

    async def delete_role(self, name: str, version: int | None = None) -> tuple[list[str], WriteResult]:
        """Drop the role and every membership in it, in one transaction (PostgreSQL's DROP ROLE
        does the same): a role created later under the same name must grant nothing to the
        former holders. Returns the holders' names."""
        if name in catalog.BUILTIN_ROLES:
            raise BadRequest(f"role {name!r} is built in and cannot be deleted")
        current = self._version(catalog.role_key(name), f"no role {name!r}")
        ops = [TxnOp("del", catalog.role_key(name), if_version=current if version is None else version)]
        changed = catalog_rules.without_role(self._store.all(catalog.USERS_PREFIX), name)
        ops += [
            TxnOp("set", catalog.user_key(user["name"]), catalog.encode(user), if_version=user_version)
            for user_version, user in changed
        ]
        holders = [user["name"] for _, user in changed]
        try:
            _, result = await self._engine.txn(ops)
        except PreconditionFailed:
            if version is not None and not holders:
                raise  # the caller's own If-Match
            raise Conflict(f"role {name!r} or one of its holders was changed meanwhile; retry") from None
        return holders, result

    # -- raw writes through the data API -------------------------------------------------

    def _sealed(self, document: dict[str, Any]) -> dict[str, Any]:
        """Signing keys a superuser writes raw are stored sealed under this node's cluster key
        (a secret in the clear is sealed, so no raw write puts one in the replicated catalog);
        one sealed under a key this node lacks is refused: no node could use it."""
        try:
            return signing_keys.reseal(document, self._cluster_key) or document
        except ClusterKeyError as error:
            raise InvalidDocument(f"{catalog.JWT_KEYS_KEY}: {error}", key=catalog.JWT_KEYS_KEY) from None

    def raw_value(self, key: str, value: bytes) -> bytes:
        """What a raw PUT of `value` at `key` stores: checked, and for a user whose password,
        lock or login right changes, with a token generation that ends its sessions."""
        if key.startswith(idempotency.PREFIX):
            raise BadRequest(
                f"{key} is a remembered answer to a request with an Idempotency-Key: the node writes "
                "these (with the request's own write); DELETE one to forget it"
            )
        value = self.checked(key, value)
        if key == catalog.JWT_KEYS_KEY:
            return catalog.encode(self._sealed(catalog.decode(value)))
        if not key.startswith(catalog.USERS_PREFIX):
            return value
        document = catalog.decode(value)
        current = self._store.usable(key)  # repairing a damaged document: treat it as a new user
        if catalog_rules.ends_sessions(None if current is None else current[1], document):
            document["token_generation"] = max(document["token_generation"], self.fresh_generation())
            return catalog.encode(document)
        return value

    async def raw_put(self, key: str, value: bytes, if_version: int | None, if_absent: bool) -> WriteResult:
        stored = self.raw_value(key, value)
        return await self._engine.put(key, stored, if_version=if_version, if_absent=if_absent)

    async def raw_delete(self, key: str, if_version: int | None) -> WriteResult:
        """DELETE /v1/kv/_sys...: a user or role takes its dependents along."""
        self._check_deletable(key)
        if key.startswith(catalog.USERS_PREFIX):
            return (await self.delete_user(key[len(catalog.USERS_PREFIX) :], if_version))[1]
        if key.startswith(catalog.ROLES_PREFIX):
            return (await self.delete_role(key[len(catalog.ROLES_PREFIX) :], if_version))[1]
        return await self._engine.delete(key, if_version)

    def raw_txn_op(self, op: TxnOp) -> TxnOp:
        """A transaction's op on a catalog key, checked; deleting a user or role needs its own
        request (its dependents go with it)."""
        if op.kind == "set":
            return op._replace(value=self.raw_value(op.key, op.value))
        if op.kind == "del":
            self._check_deletable(op.key)
            if op.key.startswith((catalog.USERS_PREFIX, catalog.ROLES_PREFIX)):
                raise BadRequest(
                    f"delete {op.key} on its own (DELETE /v1/kv/{op.key} or the admin API): "
                    "its API keys or memberships go with it"
                )
        return op

    @staticmethod
    def _check_deletable(key: str) -> None:
        if key in REQUIRED_KEYS:
            raise BadRequest(f"{key} cannot be deleted: the node needs it (change it with kvctl instead)")
