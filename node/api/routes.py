"""The route table: every route of the node with what it requires, and the one router serving it.

Like Starlette's `requires(...)`, a route declares what its caller needs, and the router
authenticates and checks that in one place before the handler runs: no handler checks a
role itself. A KEY_ACTION route's handler checks an action on each key it touches (kv.py):
what that needs depends on the request.

The order of answers:
- an open route's path: 405 for another method; the probes answer even while the node
  recovers, login and the system identifier 503 until it is ready;
- any other path: 503 while recovering, then 401 without valid credentials (before routing:
  a 401 says nothing about which routes exist), then 404 or 405 with Allow, then 403 when
  the caller lacks what the route requires.

The data path (`/v1/kv/{key}`) is matched by its prefix first, without walking templates: at
~20 us a request, routing must cost next to nothing (the server bake-off's RESULTS-bakeoff.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from ..catalog import Principal
from ..errors import Forbidden, MethodNotAllowed, NotFound, Unavailable
from .http import Request, Response, StreamResponse

Reply = Response | StreamResponse
Handler = Callable[[Request, Principal], Awaitable[Reply]]
# An open route's handler gets no principal: none was asked for.
OpenHandler = Callable[[Request], Awaitable[Reply]]


# authenticated: any caller with valid credentials; key action: authenticated, and the handler
# checks an action (read, write...) on each key; superuser; replication: the replication action
# (the built-in role of that name) or a superuser. Strings, not an Enum: checked on every request,
# and an Enum member's lookup costs more than the rest of the check.
Access = Literal["authenticated", "key action", "superuser", "replication"]


@dataclass(frozen=True, slots=True)
class Requires:
    access: Access
    routes: str = ""  # superuser: what the routes are, as a refusal names them ("admin routes")

    def check(self, principal: Principal) -> None:
        if self.access == "superuser" and not principal.superuser:
            raise Forbidden(f"user {principal.name!r} is not a superuser; {self.routes} need the admin role")
        if self.access == "replication" and not (principal.superuser or principal.has_action("replication")):
            raise Forbidden(f"user {principal.name!r} may not use replication routes: needs the replication role")


AUTHENTICATED: Final = Requires("authenticated")
KEY_ACTION: Final = Requires("key action")
REPLICATION: Final = Requires("replication")


def superuser(routes: str) -> Requires:
    """Superusers only; a refusal says `{routes} need the admin role`."""
    return Requires("superuser", routes)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # a template: `{name}` stands for one path segment (under the fast prefix: the rest, see Router)
    handler: Handler
    requires: Requires


@dataclass(frozen=True, slots=True)
class OpenRoute:
    """A route answered without credentials. Its path is static."""

    method: str
    path: str
    handler: OpenHandler
    before_ready: bool = False  # answered while the node recovers: the probes


def _is_param(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _method_not_allowed(request: Request, allowed: Iterable[str]) -> MethodNotAllowed:
    return MethodNotAllowed(f"{request.method} is not supported on {request.path}", list(allowed))


def _recovering() -> Unavailable:
    return Unavailable("the node is still recovering; retry when /ready says ready")


class Router:
    """Matches a request to its route: open routes and static paths by dict lookup, then the
    templates in table order (the first whose segments fit decides; a 405 names its methods).

    Under `fast_prefix` a template is the prefix, one parameter holding the rest of the path
    (a key may hold '/'), and an optional literal tail (`/v1/kv/{key}/incr`): a path takes the
    longest tail it ends with. Those handlers read the parameter from the path themselves
    (kv.py: on a key ending in /incr, the tail is part of the key for every method but POST).
    """

    def __init__(
        self,
        routes: Iterable[Route | OpenRoute],
        *,
        fast_prefix: str,
        ready: Callable[[], bool],
        authenticate: Callable[[Request], Principal],
    ) -> None:
        self.routes = tuple(routes)
        self._fast_prefix = fast_prefix
        self._ready = ready
        self._authenticate = authenticate
        self._open: dict[str, dict[str, OpenRoute]] = {}
        self._static: dict[str, dict[str, Route]] = {}
        self._templates: dict[tuple[str, ...], dict[str, Route]] = {}
        tails: dict[str, dict[str, Route]] = {}
        for route in self.routes:
            if isinstance(route, OpenRoute):
                self._open.setdefault(route.path, {})[route.method] = route
            elif route.path.startswith(fast_prefix):
                rest = route.path[len(fast_prefix) :]
                assert rest.startswith("{") and "}" in rest, f"{route.path}: no parameter after {fast_prefix}"
                tails.setdefault(rest[rest.index("}") + 1 :], {})[route.method] = route
            elif "{" in route.path:
                self._templates.setdefault(tuple(route.path.split("/")), {})[route.method] = route
            else:
                self._static.setdefault(route.path, {})[route.method] = route
        self._tails = sorted(tails.items(), key=lambda item: -len(item[0]))  # the longest tail first
        self.open_paths: frozenset[str] = frozenset(self._open)

    async def dispatch(self, request: Request) -> Reply:
        path = request.path
        if path.startswith(self._fast_prefix) and self._ready():
            principal = self._authenticate(request)
            route = self._fast_route(request)
            route.requires.check(principal)
            return await route.handler(request, principal)
        open_methods = self._open.get(path)
        if open_methods is not None:
            open_route = open_methods.get(request.method)
            if open_route is None:
                raise _method_not_allowed(request, open_methods)
            if not (open_route.before_ready or self._ready()):
                raise _recovering()
            return await open_route.handler(request)
        if not self._ready():
            raise _recovering()
        principal = self._authenticate(request)
        route = self._route(request)
        route.requires.check(principal)
        return await route.handler(request, principal)

    def _fast_route(self, request: Request) -> Route:
        rest = request.path[len(self._fast_prefix) :]
        for tail, methods in self._tails:
            if rest.endswith(tail):
                route = methods.get(request.method)
                if route is None:
                    raise _method_not_allowed(request, methods)
                return route
        raise NotFound(f"no route {request.method} {request.path}")  # only when no route has an empty tail

    def _route(self, request: Request) -> Route:
        methods = self._static.get(request.path)
        if methods is None:
            methods = self._template_methods(request)
        route = methods.get(request.method)
        if route is None:
            raise _method_not_allowed(request, methods)
        return route

    def _template_methods(self, request: Request) -> dict[str, Route]:
        """The methods of the first template the path fits; its parameters go to `request.path_params`.
        A parameter matches any one segment, an empty one too (its handler refuses a bad name)."""
        parts = request.path.split("/")
        for segments, methods in self._templates.items():
            if len(segments) == len(parts) and all(s == p or _is_param(s) for s, p in zip(segments, parts)):
                request.path_params = {s[1:-1]: p for s, p in zip(segments, parts) if _is_param(s)}
                return methods
        raise NotFound(f"no route {request.method} {request.path}")
