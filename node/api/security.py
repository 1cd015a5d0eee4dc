"""Admin routes for host rules, token signing keys and the auth policy. Superuser only.

GET  /v1/admin/hba               the ordered rules and their document version (ETag)
PUT  /v1/admin/hba               replace them: {"rules": [...]}, If-Match: "<version>";
                                 refused when they would reject the caller itself
                                 unless ?force=true
GET  /v1/admin/jwt-keys          signing keys, never their secrets
POST /v1/admin/jwt-keys/rotate   a new current key; {"drop_old": true} also drops the
                                 others at once (a leaked secret: everyone logs in again)
GET  /v1/admin/settings/auth     the cluster's auth policy (auth_policy.py) and its version
PATCH /v1/admin/settings/auth    change some of it: {"password_min_length": 12, ...};
                                 If-Match: "<version>" optional; effective on the next request
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from .. import auth_policy, catalog, hba, signing_keys
from ..audit import AuditLog
from ..auth import Authenticator
from ..catalog import Principal
from ..catalog_changes import CatalogChanges
from ..catalog_store import DamagedDocument
from ..errors import BadRequest, Conflict, PreconditionFailed
from .http import Request, Response, json_response, version_from_etag
from .routes import Route, superuser

HBA_PATH = "/v1/admin/hba"
JWT_KEYS_PATH = "/v1/admin/jwt-keys"
AUTH_SETTINGS_PATH = "/v1/admin/settings/auth"


class SecurityNode(Protocol):
    auth: Authenticator
    audit: AuditLog
    catalog_changes: CatalogChanges


class WouldLockOut(BadRequest):
    code = "would_lock_out"


def _if_match(request: Request, path: str, what: str, current_version: int | None) -> None:
    """An optional If-Match: the version ETag the caller read; a 412 when it is not the current one."""
    raw = request.header("if-match")
    if raw is None:
        return
    expected = version_from_etag(raw, f"If-Match (the version ETag from GET {path})")
    if expected != current_version:
        raise PreconditionFailed(f"{what} are at version {current_version}, not {expected}; read them again")


def routes(node: SecurityNode) -> list[Route]:
    def read(key: str) -> tuple[int | None, dict[str, Any] | None]:
        found = node.catalog_changes.store.read(key)
        return (None, None) if found is None else found

    def current_version(key: str) -> int | None:
        """The version a change replaces: a damaged document is replaced like any other."""
        return node.catalog_changes.store.version(key)

    async def write(key: str, document: dict[str, Any], version: int | None) -> int:
        return (await node.catalog_changes.put(key, document, version)).version

    def rules_response(rules: list[dict[str, Any]], version: int | None) -> Response:
        headers = [] if version is None else [("etag", f'"{version}"')]
        return json_response({"rules": rules, "version": version}, headers=headers)

    async def get_hba(request: Request, principal: Principal) -> Response:
        version, document = read(catalog.HBA_KEY)
        return rules_response(document["rules"] if document else hba.DEFAULT_RULES, version)

    async def put_hba(request: Request, principal: Principal) -> Response:
        body = request.json()
        if not isinstance(body, dict) or set(body) != {"rules"}:
            raise BadRequest('body must be {"rules": [{"action", "cidr", "user"?, "role"?, "comment"?}, ...]}')
        try:
            rules = hba.parse_rules(body["rules"])
        except hba.RuleError as error:
            raise BadRequest(str(error)) from None
        decision = hba.decide(rules, request.address, principal.name, principal.roles)
        force = request.query_bool("force")
        if not decision.allowed and not force:
            raise WouldLockOut(
                f"these rules would lock you ({principal.name!r}) out from {request.address} ({decision.reason()}); "
                "add a rule that allows you first, or send ?force=true"
            )
        replaced = current_version(catalog.HBA_KEY)
        _if_match(request, HBA_PATH, "host rules", replaced)
        stored = hba.normalise(body["rules"])
        version = await write(catalog.HBA_KEY, {"rules": stored}, replaced)
        node.audit.record("hba_changed", rules=len(stored), by=principal.name, address=request.address)
        return rules_response(stored, version)

    async def get_jwt_keys(request: Request, principal: Principal) -> Response:
        _, document = read(catalog.JWT_KEYS_KEY)
        if document is None:
            raise Conflict("this node has no signing keys yet (catalog not bootstrapped)")
        return json_response(signing_keys.public(document))

    async def rotate_jwt_key(request: Request, principal: Principal) -> Response:
        body = request.json() if request.body else {}
        drop_old = body.get("drop_old", False) if isinstance(body, dict) and set(body) <= {"drop_old"} else None
        if not isinstance(drop_old, bool):
            raise BadRequest('body must be {"drop_old": true|false} or empty')
        try:
            version, document = read(catalog.JWT_KEYS_KEY)
        except DamagedDocument as damaged:  # repaired by a rotation: only the new key is left
            version, document, drop_old = damaged.version, {"current": None, "keys": {}}, True
        if document is None or version is None:
            raise Conflict("this node has no signing keys yet (catalog not bootstrapped)")
        token_ttl_s = node.auth.policy().token_ttl_s
        rotated = signing_keys.rotate(document, int(time.time() * 1000), token_ttl_s, drop_old, node.auth.cluster_key)
        await write(catalog.JWT_KEYS_KEY, rotated, version)
        dropped = sorted(set(document["keys"]) - set(rotated["keys"]))
        node.audit.record("jwt_key_rotated", kid=rotated["current"], dropped=dropped, by=principal.name)
        return json_response(signing_keys.public(rotated))

    def policy_response(policy: auth_policy.AuthPolicy, version: int | None) -> Response:
        headers = [] if version is None else [("etag", f'"{version}"')]
        return json_response({"settings": policy.to_document(), "version": version}, headers=headers)

    async def get_auth_settings(request: Request, principal: Principal) -> Response:
        return policy_response(node.auth.policy(), current_version(catalog.AUTH_KEY))

    async def change_auth_settings(request: Request, principal: Principal) -> Response:
        changes = request.json()
        version = current_version(catalog.AUTH_KEY)
        _if_match(request, AUTH_SETTINGS_PATH, "auth settings", version)
        try:
            policy = auth_policy.changed(node.auth.policy(), changes)
        except auth_policy.PolicyError as error:
            raise BadRequest(str(error)) from None
        new_version = await write(catalog.AUTH_KEY, policy.to_document(), version)
        node.audit.record("auth_settings_changed", changes=changes, by=principal.name, address=request.address)
        return policy_response(policy, new_version)

    admin = superuser("host rules and signing keys")
    return [
        Route("GET", AUTH_SETTINGS_PATH, get_auth_settings, admin),
        Route("PATCH", AUTH_SETTINGS_PATH, change_auth_settings, admin),
        Route("GET", HBA_PATH, get_hba, admin),
        Route("PUT", HBA_PATH, put_hba, admin),
        Route("GET", JWT_KEYS_PATH, get_jwt_keys, admin),
        Route("POST", JWT_KEYS_PATH + "/rotate", rotate_jwt_key, admin),
    ]
