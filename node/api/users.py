"""Admin routes for the catalogs: users and roles under /v1/admin/users and /v1/admin/roles.

Superuser only. Every change is one write of one catalog document (so it is atomic,
WAL-logged and replicated like data), made with compare-and-set on the version read,
so two admins changing one user never lose an update. A change that must cut off a
user's live tokens (password, lock, roles, delete-and-recreate) moves the user's
`token_generation` to a value no earlier incarnation ever had.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import time
from typing import Any, Protocol

from .. import catalog
from ..audit import AuditLog
from ..auth import API_KEY_PREFIX, Authenticator, api_key_digest
from ..catalog import ACTIONS, BUILTIN_ROLES, Principal
from ..config import Settings
from ..engine import Engine, TxnOp
from ..errors import BadRequest, Conflict, Forbidden, MethodNotAllowed, NotFound, PreconditionFailed
from ..store import VALUE, VERSION
from .http import Request, Response, json_response

USERS_PATH = "/v1/admin/users"
ROLES_PATH = "/v1/admin/roles"
APIKEYS_PATH = "/v1/admin/apikeys"
CATALOG_PATHS = (USERS_PATH, ROLES_PATH, APIKEYS_PATH)
MAX_CIDRS = 32
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_PATTERN_CHARS = 256
MAX_GRANTS = 100
MAX_REASON_CHARS = 500


class CatalogNode(Protocol):
    settings: Settings
    engine: Engine
    auth: Authenticator
    audit: AuditLog


def _name(raw: str, what: str) -> str:
    if not NAME_PATTERN.match(raw):
        raise BadRequest(f"{what} name {raw!r} must be 1-64 of letters, digits, '_', '.', '@', '-'")
    return raw


def _text(raw: Any) -> str:
    return raw if isinstance(raw, str) else ""


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """What an admin sees of a user: never the password hash or the token generation."""
    return {
        "name": user["name"],
        "roles": user.get("roles", []),
        "can_login": user.get("can_login", True),
        "locked_reason": user.get("locked_reason"),
        "valid_until": user.get("valid_until"),
        "created_at_ms": user.get("created_at_ms"),
    }


class CatalogAdmin:
    def __init__(self, node: CatalogNode) -> None:
        self.node = node

    async def handle(self, request: Request, principal: Principal) -> Response:
        if not principal.superuser:
            raise Forbidden(f"user {principal.name!r} is not a superuser; catalog changes need the admin role")
        path, method = request.path, request.method
        base = next(base for base in CATALOG_PATHS if path == base or path.startswith(base + "/"))
        parts = [part for part in path[len(base) :].split("/") if part]
        if base == USERS_PATH:
            return await self._users(method, parts, request, principal)
        if base == ROLES_PATH:
            return await self._roles(method, parts, request, principal)
        return await self._apikeys(method, parts, request, principal)

    # -- documents -------------------------------------------------------------------

    def _read(self, key: str) -> tuple[int, dict[str, Any]] | None:
        entry = self.node.engine.get(key)
        return None if entry is None else (entry[VERSION], catalog.decode(entry[VALUE]))

    def _user(self, name: str) -> tuple[int, dict[str, Any]]:
        found = self._read(catalog.user_key(name))
        if found is None:
            raise NotFound(f"no user {name!r}")
        return found

    async def _write(self, key: str, document: dict[str, Any], version: int | None) -> None:
        """Create (version None) or compare-and-set one catalog document."""
        try:
            await self.node.engine.put(key, catalog.encode(document), if_version=version, if_absent=version is None)
        except PreconditionFailed:
            what = "already exists" if version is None else "was changed by someone else meanwhile; retry"
            raise Conflict(f"{key.removeprefix(catalog.SYS_PREFIX)} {what}") from None

    def _fresh_generation(self) -> int:
        # Above every revision so far, so above every generation any incarnation ever had.
        return self.node.engine.store.revision + 1

    def _check_roles(self, roles: Any) -> list[str]:
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise BadRequest("roles must be a list of role names")
        missing = [role for role in roles if self._read(catalog.role_key(role)) is None]
        if missing:
            raise BadRequest(f"unknown role(s): {', '.join(missing)}")
        return list(dict.fromkeys(roles))

    async def _password_hash(self, password: Any) -> str:
        minimum = self.node.settings.password_min_length
        if not isinstance(password, str) or len(password) < minimum:
            raise BadRequest(f"password must be a string of at least {minimum} characters")
        if len(password) > 1024:
            raise BadRequest("password is longer than 1024 characters")
        return await asyncio.get_running_loop().run_in_executor(None, self.node.auth.passwords.hash, password)

    # -- users -----------------------------------------------------------------------

    async def _users(self, method: str, parts: list[str], request: Request, actor: Principal) -> Response:
        audit = self.node.audit
        if not parts:
            if method == "GET":
                return json_response({"users": [public_user(u) for u in self._all(catalog.USERS_PREFIX)]})
            if method == "POST":
                return await self._create_user(request, actor)
            raise MethodNotAllowed(f"{method} is not supported on {USERS_PATH}")
        name = _name(parts[0], "user")
        action = parts[1] if len(parts) > 1 else None
        if len(parts) > 2:
            raise NotFound(f"no route {request.path}")
        if action is None and method == "GET":
            return json_response(public_user(self._user(name)[1]))
        if action is None and method == "DELETE":
            version, _ = self._user(name)
            await self.node.engine.delete(catalog.user_key(name), if_version=version)
            audit.record("user_deleted", user=name, by=actor.name)
            return Response(204)
        version, user = self._user(name)
        body = request.json() if request.body else {}
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        if action == "password" and method == "PUT":
            user["password_hash"] = await self._password_hash(body.get("password"))
            event: dict[str, Any] = {}
        elif action == "lock" and method == "POST":
            reason = body.get("reason") or "locked by an administrator"
            if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
                raise BadRequest(f"reason must be text of at most {MAX_REASON_CHARS} characters")
            user["locked_reason"] = reason
            event = {"reason": reason}
        elif action == "unlock" and method == "POST":
            user["locked_reason"] = None
            self.node.auth.clear_lockout(name)
            event = {}
        elif action == "roles" and method == "POST":
            grant = self._check_roles(body.get("grant", []))
            revoke = body.get("revoke", [])
            if not isinstance(revoke, list):
                raise BadRequest("revoke must be a list of role names")
            user["roles"] = [r for r in dict.fromkeys([*user.get("roles", []), *grant]) if r not in revoke]
            event = {"granted": grant, "revoked": revoke}
        else:
            raise NotFound(f"no route {method} {request.path}")
        user["token_generation"] = self._fresh_generation()  # live tokens stop working now
        await self._write(catalog.user_key(name), user, version)
        audit.record(f"user_{action}", user=name, by=actor.name, **event)
        return Response(204) if action == "password" else json_response(public_user(user))

    async def _create_user(self, request: Request, actor: Principal) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise BadRequest('body must be {"name", "password", "roles"}')
        name = _name(_text(body.get("name")), "user")
        roles = self._check_roles(body.get("roles", []))
        valid_until = body.get("valid_until")
        if valid_until is not None and (not isinstance(valid_until, int) or isinstance(valid_until, bool)):
            raise BadRequest("valid_until must be epoch seconds (an integer) or null")
        if self._read(catalog.user_key(name)) is not None:
            raise Conflict(f"user {name!r} already exists")
        password_hash = await self._password_hash(body.get("password"))
        user = catalog.user_document(name, password_hash, roles, int(time.time() * 1000))
        user["valid_until"] = valid_until
        user["token_generation"] = self._fresh_generation()
        await self._write(catalog.user_key(name), user, None)
        self.node.audit.record("user_created", user=name, roles=roles, by=actor.name)
        return json_response(public_user(user), 201)

    def _all(self, prefix: str) -> list[dict[str, Any]]:
        """Every document under a catalog prefix, page by page (never silently cut short)."""
        store, limit = self.node.engine.store, self.node.settings.max_scan_limit
        documents: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page, more = store.scan(prefix, after, limit, int(time.time() * 1000))
            documents.extend(catalog.decode(entry[VALUE]) for _, entry in page)
            if not more or not page:
                return documents
            after = page[-1][0]

    # -- roles -----------------------------------------------------------------------

    async def _roles(self, method: str, parts: list[str], request: Request, actor: Principal) -> Response:
        if not parts:
            if method == "GET":
                return json_response({"roles": self._all(catalog.ROLES_PREFIX)})
            if method == "POST":
                return await self._create_role(request, actor)
            raise MethodNotAllowed(f"{method} is not supported on {ROLES_PATH}")
        if len(parts) > 1:
            raise NotFound(f"no route {request.path}")
        name = _name(parts[0], "role")
        found = self._read(catalog.role_key(name))
        if found is None:
            raise NotFound(f"no role {name!r}")
        if method == "GET":
            return json_response(found[1])
        if method == "DELETE":
            if name in BUILTIN_ROLES:
                raise BadRequest(f"role {name!r} is built in and cannot be deleted")
            holders = await self._delete_role(name, found[0])
            self.node.audit.record("role_deleted", role=name, holders=holders, by=actor.name)
            return Response(204)
        raise MethodNotAllowed(f"{method} is not supported on {ROLES_PATH}/{{name}}")

    async def _delete_role(self, name: str, version: int) -> list[str]:
        """Drop the role and every membership in it, in one transaction (PostgreSQL's DROP ROLE
        does the same): a role created later under the same name must grant nothing to the
        former holders, and their live tokens stop working now."""
        generation = self._fresh_generation()
        ops = [TxnOp("del", catalog.role_key(name), if_version=version)]
        holders = []
        for user in self._all(catalog.USERS_PREFIX):
            if name in user.get("roles", []):
                user_version, _ = self._user(user["name"])
                changed = {**user, "roles": [r for r in user["roles"] if r != name], "token_generation": generation}
                ops.append(
                    TxnOp("set", catalog.user_key(user["name"]), catalog.encode(changed), if_version=user_version)
                )
                holders.append(user["name"])
        try:
            await self.node.engine.txn(ops)
        except PreconditionFailed:
            raise Conflict(f"role {name!r} or one of its holders was changed meanwhile; retry") from None
        return holders

    async def _create_role(self, request: Request, actor: Principal) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise BadRequest('body must be {"name", "grants": [{"actions", "pattern"}]}')
        name = _name(_text(body.get("name")), "role")
        grants = body.get("grants", [])
        if not isinstance(grants, list) or len(grants) > MAX_GRANTS:
            raise BadRequest(f"grants must be a list of at most {MAX_GRANTS} {{actions, pattern}} objects")
        checked = []
        for index, grant in enumerate(grants):
            actions = grant.get("actions") if isinstance(grant, dict) else None
            pattern = grant.get("pattern") if isinstance(grant, dict) else None
            if not isinstance(actions, list) or not actions or any(a not in ACTIONS for a in actions):
                raise BadRequest(f"grant {index}: actions must be a non-empty list of {', '.join(ACTIONS)}")
            if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_CHARS:
                raise BadRequest(f"grant {index}: pattern must be text of 1-{MAX_PATTERN_CHARS} characters")
            checked.append({"actions": sorted(set(actions), key=ACTIONS.index), "pattern": pattern})
        superuser = body.get("superuser", False)
        if not isinstance(superuser, bool):
            raise BadRequest("superuser must be true or false")
        role = {"name": name, "superuser": superuser, "grants": checked}
        await self._write(catalog.role_key(name), role, None)
        self.node.audit.record("role_created", role=name, superuser=superuser, by=actor.name)
        return json_response(role, 201)

    # -- API keys --------------------------------------------------------------------

    def _public_key(self, key: dict[str, Any]) -> dict[str, Any]:
        shown = {field: key.get(field) for field in ("id", "name", "user", "cidrs", "expires_at", "created_at_ms")}
        shown["last_used_at"] = self.node.auth.key_last_used.get(key["id"])
        return shown

    async def _apikeys(self, method: str, parts: list[str], request: Request, actor: Principal) -> Response:
        keys = self._all(catalog.APIKEYS_PREFIX)
        if not parts:
            if method == "GET":
                return json_response({"apikeys": [self._public_key(key) for key in keys]})
            if method == "POST":
                return await self._create_key(request, actor, keys)
            raise MethodNotAllowed(f"{method} is not supported on {APIKEYS_PATH}")
        if len(parts) > 1 or method != "DELETE":
            raise NotFound(f"no route {method} {request.path}")
        name = _name(parts[0], "API key")
        key = next((key for key in keys if key["name"] == name), None)
        if key is None:
            raise NotFound(f"no API key {name!r}")
        await self.node.engine.delete(catalog.apikey_key(key["id"]))
        self.node.audit.record("apikey_revoked", name=name, user=key["user"], by=actor.name)
        return Response(204)

    async def _create_key(self, request: Request, actor: Principal, keys: list[dict[str, Any]]) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise BadRequest('body must be {"name", "user", "cidrs", "expires_at"}')
        name = _name(_text(body.get("name")), "API key")
        if any(key["name"] == name for key in keys):
            raise Conflict(f"API key {name!r} already exists")
        user = body.get("user")
        if not isinstance(user, str) or self._read(catalog.user_key(user)) is None:
            raise BadRequest(f"unknown user {user!r}: an API key acts as an existing user")
        cidrs = body.get("cidrs") or []
        if not isinstance(cidrs, list) or len(cidrs) > MAX_CIDRS:
            raise BadRequest(f"cidrs must be a list of at most {MAX_CIDRS} networks")
        try:
            networks = [str(ipaddress.ip_network(cidr, strict=False)) for cidr in cidrs]
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"bad CIDR: {exc}") from None
        expires_at = body.get("expires_at")
        if expires_at is not None and (not isinstance(expires_at, int) or isinstance(expires_at, bool)):
            raise BadRequest("expires_at must be epoch seconds (an integer) or null")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        key = {
            "id": key_id,
            "name": name,
            "user": user,
            "cidrs": networks,
            "expires_at": expires_at,
            "created_at_ms": int(time.time() * 1000),
            "secret_sha256": api_key_digest(secret),  # the secret itself is never stored
        }
        await self._write(catalog.apikey_key(key_id), key, None)
        self.node.audit.record("apikey_created", name=name, user=user, cidrs=networks, by=actor.name)
        return json_response({**self._public_key(key), "token": f"{API_KEY_PREFIX}{key_id}_{secret}"}, 201)
