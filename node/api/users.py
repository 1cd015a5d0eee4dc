"""Admin routes for the catalogs: users and roles under /v1/admin/users and /v1/admin/roles.

Superuser only. Every change is one write of one catalog document, or one transaction
when dependents go along (a user's API keys, a role's memberships), made through
catalog_changes.py with compare-and-set on the version read (catalog_store.py), so two
admins changing one user never lose an update. A change that must cut off a user's live tokens (password,
lock, delete-and-recreate) moves the user's `token_generation` to a value no earlier
incarnation ever had; grants and revokes do not: privileges are resolved per request.
"""

from __future__ import annotations

import time
from typing import Any, Final, Protocol

from .. import catalog, catalog_rules
from ..audit import AuditLog
from ..auth import Authenticator
from ..catalog import BUILTIN_ROLES, Principal
from ..catalog_changes import CatalogChanges
from ..catalog_documents import (
    MAX_GRANTS,
    MAX_REASON_CHARS,
    NAME_PATTERN,
    DocumentError,
    check_cidrs,
    check_grant,
    check_grants,
    check_name,
)
from ..catalog_store import CatalogStore
from ..errors import BadRequest, Conflict, NotFound
from .http import JSON_INT_MAX, Request, Response, json_integer, json_response
from .routes import Route, superuser

USERS_PATH = "/v1/admin/users"
ROLES_PATH = "/v1/admin/roles"
APIKEYS_PATH = "/v1/admin/apikeys"
MAX_PASSWORD_CHARS = 1024
DEFAULT_LOCK_REASON: Final = "locked by an administrator"


class CatalogNode(Protocol):
    auth: Authenticator
    audit: AuditLog
    catalog_changes: CatalogChanges


def _name(raw: Any, what: str) -> str:
    try:
        name = check_name(raw, what)
    except DocumentError as error:
        raise BadRequest(str(error)) from None
    if NAME_PATTERN.fullmatch(name) is None:  # the pattern's `$` would also let a trailing newline through
        raise BadRequest(f"{what} name {raw!r} must be 1-64 of letters, digits, '_', '.', '@', '-'")
    return name


def _path_name(request: Request, what: str) -> str:
    """The {name} of the route's path, checked like a name in a body."""
    return _name(request.path_params["name"], what)


def _names(raw: Any, field: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise BadRequest(f"{field} must be a list of role names")
    return raw


def _checked(check: Any, *args: Any) -> Any:
    """A catalog_documents check whose failure is the client's 400."""
    try:
        return check(*args)
    except DocumentError as error:
        raise BadRequest(str(error)) from None


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

    def routes(self) -> list[Route]:
        user, role, apikey = f"{USERS_PATH}/{{name}}", f"{ROLES_PATH}/{{name}}", f"{APIKEYS_PATH}/{{name}}"
        admin = superuser("catalog changes")
        return [
            Route("GET", USERS_PATH, self._list_users, admin),
            Route("POST", USERS_PATH, self._create_user, admin),
            Route("GET", user, self._get_user, admin),
            Route("DELETE", user, self._delete_user, admin),
            Route("PUT", user + "/password", self._change_user, admin),
            Route("POST", user + "/lock", self._change_user, admin),
            Route("POST", user + "/unlock", self._change_user, admin),
            Route("POST", user + "/roles", self._change_user, admin),
            Route("GET", ROLES_PATH, self._list_roles, admin),
            Route("POST", ROLES_PATH, self._create_role, admin),
            Route("GET", role, self._role, admin),
            Route("PATCH", role, self._role, admin),
            Route("DELETE", role, self._role, admin),
            Route("GET", APIKEYS_PATH, self._list_keys, admin),
            Route("POST", APIKEYS_PATH, self._create_key, admin),
            Route("DELETE", apikey, self._delete_key, admin),
        ]

    @property
    def changes(self) -> CatalogChanges:
        return self.node.catalog_changes  # exists once the node has recovered

    @property
    def documents(self) -> CatalogStore:
        return self.changes.store

    def _check_roles(self, roles: Any) -> list[str]:
        roles = _names(roles, "roles")
        missing = [role for role in roles if self.documents.read(catalog.role_key(role)) is None]
        if missing:
            raise BadRequest(f"unknown role(s): {', '.join(missing)}")
        return list(dict.fromkeys(roles))

    async def _password_hash(self, password: Any) -> str:
        minimum = self.node.auth.policy().password_min_length
        if not isinstance(password, str) or len(password) < minimum:
            raise BadRequest(f"password must be a string of at least {minimum} characters (password_min_length)")
        if len(password) > MAX_PASSWORD_CHARS:
            raise BadRequest(f"password is longer than {MAX_PASSWORD_CHARS} characters")
        return await self.node.auth.hash_password(password)

    # -- users -----------------------------------------------------------------------

    def _all(self, prefix: str) -> list[dict[str, Any]]:
        return [document for _, document in self.documents.all(prefix)]

    def _user(self, name: str) -> tuple[int, dict[str, Any]]:
        found = self.documents.read(catalog.user_key(name))
        if found is None:
            raise NotFound(f"no user {name!r}")
        return found

    async def _list_users(self, request: Request, actor: Principal) -> Response:
        return json_response({"users": [public_user(u) for u in self._all(catalog.USERS_PREFIX)]})

    async def _get_user(self, request: Request, actor: Principal) -> Response:
        return json_response(public_user(self._user(_path_name(request, "user"))[1]))

    async def _delete_user(self, request: Request, actor: Principal) -> Response:
        name = _path_name(request, "user")
        apikeys, _ = await self.changes.delete_user(name)
        self.node.audit.record("user_deleted", user=name, apikeys=apikeys, by=actor.name)
        return Response(204)

    async def _change_user(self, request: Request, actor: Principal) -> Response:
        """PUT .../password, POST .../lock, .../unlock, .../roles: one compare-and-set of the user."""
        name = _path_name(request, "user")
        action = request.path.rsplit("/", 1)[1]
        version, user = self._user(name)
        body = request.json() if request.body else {}
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        ends_sessions = True
        if action == "password":
            user["password_hash"] = await self._password_hash(body.get("password"))
            event: dict[str, Any] = {}
        elif action == "lock":
            reason = body.get("reason")
            if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
                raise BadRequest(f"reason must be text of at most {MAX_REASON_CHARS} characters")
            user["locked_reason"] = reason or DEFAULT_LOCK_REASON
            event = {"reason": user["locked_reason"]}
        elif action == "unlock":
            user["locked_reason"] = None
            self.node.auth.clear_lockout(name)
            event, ends_sessions = {}, False  # the lock already ended them
        else:
            grant = self._check_roles(body.get("grant", []))
            revoke = _names(body.get("revoke", []), "revoke")
            user["roles"] = [r for r in dict.fromkeys([*user.get("roles", []), *grant]) if r not in revoke]
            event, ends_sessions = {"granted": grant, "revoked": revoke}, False  # effective on the next request
        if ends_sessions:
            user["token_generation"] = self.changes.fresh_generation()  # live tokens stop working now
        await self.changes.put(catalog.user_key(name), user, version)
        self.node.audit.record(f"user_{action}", user=name, by=actor.name, **event)
        return Response(204) if action == "password" else json_response(public_user(user))

    async def _create_user(self, request: Request, actor: Principal) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise BadRequest('body must be {"name", "password", "roles"}')
        name = _name(body.get("name"), "user")
        roles = self._check_roles(body.get("roles", []))
        valid_until = body.get("valid_until")
        if valid_until is not None:
            valid_until = json_integer(valid_until, 0, JSON_INT_MAX)
            if valid_until is None:
                raise BadRequest("valid_until must be epoch seconds (an integer from 0) or null")
        if self.documents.read(catalog.user_key(name)) is not None:
            raise Conflict(f"user {name!r} already exists")
        password_hash = await self._password_hash(body.get("password"))
        user = catalog.user_document(name, password_hash, roles, int(time.time() * 1000))
        user["valid_until"] = valid_until
        user["token_generation"] = self.changes.fresh_generation()
        await self.changes.put(catalog.user_key(name), user, None)
        self.node.audit.record("user_created", user=name, roles=roles, by=actor.name)
        return json_response(public_user(user), 201)

    # -- roles -----------------------------------------------------------------------

    async def _list_roles(self, request: Request, actor: Principal) -> Response:
        return json_response({"roles": self._all(catalog.ROLES_PREFIX)})

    async def _role(self, request: Request, actor: Principal) -> Response:
        """GET, PATCH and DELETE /v1/admin/roles/{name}."""
        name = _path_name(request, "role")
        found = self.documents.read(catalog.role_key(name))
        if found is None:
            raise NotFound(f"no role {name!r}")
        if request.method == "GET":
            return json_response(found[1])
        if request.method == "PATCH":
            return await self._alter_role(request, actor, *found)
        holders, _ = await self.changes.delete_role(name, found[0])
        self.node.audit.record("role_deleted", role=name, holders=holders, by=actor.name)
        return Response(204)

    async def _create_role(self, request: Request, actor: Principal) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise BadRequest('body must be {"name", "grants": [{"actions", "pattern"}]}')
        name = _name(body.get("name"), "role")
        grants = _checked(check_grants, body.get("grants", []))
        superuser = body.get("superuser", False)
        if not isinstance(superuser, bool):
            raise BadRequest("superuser must be true or false")
        role = {"name": name, "superuser": superuser, "grants": grants}
        await self.changes.put(catalog.role_key(name), role, None)
        self.node.audit.record("role_created", role=name, superuser=superuser, by=actor.name)
        return json_response(role, 201)

    async def _alter_role(self, request: Request, actor: Principal, version: int, role: dict[str, Any]) -> Response:
        """PATCH {"grant": [{actions, pattern}], "revoke": [{actions, pattern}], "superuser"?}, like
        SQL's GRANT/REVOKE on a role: effective for every holder on their next request."""
        if role["name"] in BUILTIN_ROLES:
            raise BadRequest(f"role {role['name']!r} is built in and cannot be changed; create a role of your own")
        body = request.json()
        if not isinstance(body, dict) or not body or set(body) - {"grant", "revoke", "superuser"}:
            raise BadRequest('body must be {"grant": [{"actions", "pattern"}], "revoke": [...], "superuser": bool}')
        grants = {grant["pattern"]: list(grant["actions"]) for grant in role["grants"]}
        for what in ("grant", "revoke"):
            changes = body.get(what, [])
            if not isinstance(changes, list) or len(changes) > MAX_GRANTS:
                raise BadRequest(f"{what} must be a list of at most {MAX_GRANTS} {{actions, pattern}} objects")
            for index, raw in enumerate(changes):
                change = _checked(check_grant, index, raw)
                held = grants.get(change["pattern"], [])
                if what == "grant":
                    grants[change["pattern"]] = [*held, *(a for a in change["actions"] if a not in held)]
                elif held:
                    grants[change["pattern"]] = [a for a in held if a not in change["actions"]]
        superuser = body.get("superuser", role["superuser"])
        if not isinstance(superuser, bool):
            raise BadRequest("superuser must be true or false")
        altered = {
            "name": role["name"],
            "superuser": superuser,
            "grants": _checked(check_grants, [{"actions": a, "pattern": p} for p, a in grants.items() if a]),
        }
        await self.changes.put(catalog.role_key(role["name"]), altered, version)
        self.node.audit.record(
            "role_altered",
            role=role["name"],
            granted=body.get("grant", []),
            revoked=body.get("revoke", []),
            superuser=superuser,
            by=actor.name,
        )
        return json_response(altered)

    # -- API keys --------------------------------------------------------------------

    def _public_key(self, key: dict[str, Any]) -> dict[str, Any]:
        shown = {field: key.get(field) for field in ("id", "name", "user", "cidrs", "expires_at", "created_at_ms")}
        shown["last_used_at"] = self.node.auth.key_last_used.get(key["id"])
        return shown

    async def _list_keys(self, request: Request, actor: Principal) -> Response:
        return json_response({"apikeys": [self._public_key(key) for key in self._all(catalog.APIKEYS_PREFIX)]})

    async def _delete_key(self, request: Request, actor: Principal) -> Response:
        name = _path_name(request, "API key")
        key = next((key for key in self._all(catalog.APIKEYS_PREFIX) if key["name"] == name), None)
        if key is None:
            raise NotFound(f"no API key {name!r}")
        await self.changes.raw_delete(catalog.apikey_key(key["id"]), None)
        self.node.audit.record("apikey_revoked", name=name, user=key["user"], by=actor.name)
        return Response(204)

    async def _create_key(self, request: Request, actor: Principal) -> Response:
        keys = self._all(catalog.APIKEYS_PREFIX)
        body = request.json()
        if not isinstance(body, dict):
            raise BadRequest('body must be {"name", "user", "cidrs", "expires_at"}')
        name = _name(body.get("name"), "API key")
        if any(key["name"] == name for key in keys):
            raise Conflict(f"API key {name!r} already exists")
        username = body.get("user")
        user = self.documents.read(catalog.user_key(username)) if isinstance(username, str) else None
        if user is None:
            raise BadRequest(f"unknown user {username!r}: an API key acts as an existing user")
        cidrs = body.get("cidrs")
        if cidrs is not None and (not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs)):
            raise BadRequest('cidrs must be a list of networks such as "10.0.0.0/8", or null')
        networks = _checked(check_cidrs, cidrs or [])
        expires_at = body.get("expires_at")
        if expires_at is not None:
            expires_at = json_integer(expires_at, 0, JSON_INT_MAX)
            if expires_at is None:
                raise BadRequest("expires_at must be epoch seconds (an integer from 0) or null")
        key, token = catalog_rules.mint_api_key(name, user[1], networks, expires_at, int(time.time() * 1000))
        await self.changes.put(catalog.apikey_key(key["id"]), key, None)
        self.node.audit.record("apikey_created", name=name, user=username, cidrs=networks, by=actor.name)
        return json_response({**self._public_key(key), "token": token}, 201)
