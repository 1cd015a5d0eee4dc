"""Admin routes for host rules and token signing keys. Superuser only.

GET  /v1/admin/hba               the ordered rules and their document version (ETag)
PUT  /v1/admin/hba               replace them: {"rules": [...]}, If-Match: "<version>";
                                 refused when they would reject the caller itself
                                 unless ?force=true
GET  /v1/admin/jwt-keys          signing keys, never their secrets
POST /v1/admin/jwt-keys/rotate   a new current key; {"drop_old": true} also drops the
                                 others at once (a leaked secret: everyone logs in again)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .. import catalog, hba, signing_keys
from ..audit import AuditLog
from ..catalog import Principal
from ..config import Settings
from ..engine import Engine
from ..errors import BadRequest, Conflict, Forbidden, PreconditionFailed
from ..store import VALUE, VERSION
from .http import Request, Response, json_response

HBA_PATH = "/v1/admin/hba"
JWT_KEYS_PATH = "/v1/admin/jwt-keys"

Handler = Callable[[Request, Principal], Awaitable[Response]]


class SecurityNode(Protocol):
    settings: Settings
    engine: Engine
    audit: AuditLog


class WouldLockOut(BadRequest):
    code = "would_lock_out"


def _require_superuser(principal: Principal) -> None:
    if not principal.superuser:
        raise Forbidden(f"user {principal.name!r} is not a superuser; host rules and signing keys need the admin role")


def _if_match(request: Request) -> int | None:
    raw = request.header("if-match")
    if raw is None:
        return None
    try:
        return int(raw.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise BadRequest(f"If-Match must be the version ETag from GET {HBA_PATH}, got {raw!r}") from None


def routes(node: SecurityNode) -> dict[tuple[str, str], Handler]:
    def read(key: str) -> tuple[int | None, dict[str, Any] | None]:
        entry = node.engine.get(key)
        return (None, None) if entry is None else (entry[VERSION], catalog.decode(entry[VALUE]))

    async def write(key: str, document: dict[str, Any], version: int | None) -> int:
        try:
            result = await node.engine.put(key, catalog.encode(document), if_version=version, if_absent=version is None)
        except PreconditionFailed:
            raise Conflict(f"{key} was changed by someone else meanwhile; read it again and retry") from None
        return result.version

    def rules_response(rules: list[dict[str, Any]], version: int | None) -> Response:
        headers = [] if version is None else [("etag", f'"{version}"')]
        return json_response({"rules": rules, "version": version}, headers=headers)

    async def get_hba(request: Request, principal: Principal) -> Response:
        _require_superuser(principal)
        version, document = read(catalog.HBA_KEY)
        return rules_response(document["rules"] if document else hba.DEFAULT_RULES, version)

    async def put_hba(request: Request, principal: Principal) -> Response:
        _require_superuser(principal)
        body = request.json()
        if not isinstance(body, dict) or set(body) != {"rules"}:
            raise BadRequest('body must be {"rules": [{"action", "cidr", "user"?, "role"?, "comment"?}, ...]}')
        try:
            rules = hba.parse_rules(body["rules"])
        except hba.RuleError as error:
            raise BadRequest(str(error)) from None
        decision = hba.decide(rules, request.address, principal.name, principal.roles)
        force = request.query.get("force", "false").lower() in ("1", "true", "yes")
        if not decision.allowed and not force:
            raise WouldLockOut(
                f"these rules would lock you ({principal.name!r}) out from {request.address} ({decision.reason()}); "
                "add a rule that allows you first, or send ?force=true"
            )
        current_version, _ = read(catalog.HBA_KEY)
        expected = _if_match(request)
        if expected is not None and expected != current_version:
            raise PreconditionFailed(f"host rules are at version {current_version}, not {expected}; read them again")
        stored = hba.normalise(body["rules"])
        version = await write(catalog.HBA_KEY, {"rules": stored}, current_version)
        node.audit.record("hba_changed", rules=len(stored), by=principal.name, address=request.address)
        return rules_response(stored, version)

    async def get_jwt_keys(request: Request, principal: Principal) -> Response:
        _require_superuser(principal)
        _, document = read(catalog.JWT_KEYS_KEY)
        if document is None:
            raise Conflict("this node has no signing keys yet (catalog not bootstrapped)")
        return json_response(signing_keys.public(document))

    async def rotate_jwt_key(request: Request, principal: Principal) -> Response:
        _require_superuser(principal)
        body = request.json() if request.body else {}
        drop_old = body.get("drop_old", False) if isinstance(body, dict) and set(body) <= {"drop_old"} else None
        if not isinstance(drop_old, bool):
            raise BadRequest('body must be {"drop_old": true|false} or empty')
        version, document = read(catalog.JWT_KEYS_KEY)
        if document is None or version is None:
            raise Conflict("this node has no signing keys yet (catalog not bootstrapped)")
        rotated = signing_keys.rotate(document, int(time.time() * 1000), node.settings.token_ttl_s, drop_old)
        await write(catalog.JWT_KEYS_KEY, rotated, version)
        dropped = sorted(set(document["keys"]) - set(rotated["keys"]))
        node.audit.record("jwt_key_rotated", kid=rotated["current"], dropped=dropped, by=principal.name)
        return json_response(signing_keys.public(rotated))

    return {
        ("GET", HBA_PATH): get_hba,
        ("PUT", HBA_PATH): put_hba,
        ("GET", JWT_KEYS_PATH): get_jwt_keys,
        ("POST", JWT_KEYS_PATH + "/rotate"): rotate_jwt_key,
    }
