"""The router of node/api/routes.py, in-process: the order of its answers (503, 401, 404/405,
403), the methods a 405 names, {name} templates, and the data path's prefix with its tails."""

from __future__ import annotations

import asyncio

import pytest

from kvstore.node.api.http import Request, Response
from kvstore.node.api.routes import (
    AUTHENTICATED,
    KEY_ACTION,
    REPLICATION,
    Handler,
    OpenRoute,
    Requires,
    Route,
    Router,
    superuser,
)
from kvstore.node.catalog import Grant, Principal
from kvstore.node.errors import Forbidden, KvError, MethodNotAllowed, NotFound, Unauthorized, Unavailable

CALLERS = {
    "root": Principal("root", True, ("admin",), (), 1),
    "shipper": Principal("shipper", False, ("replication",), (Grant(frozenset({"replication"}), "*"),), 1),
    "plain": Principal("plain", False, (), (), 1),
}


def _authenticate(request: Request) -> Principal:
    caller = CALLERS.get(request.header("authorization") or "")
    if caller is None:
        raise Unauthorized("who are you?")
    return caller


def _handler(name: str) -> Handler:
    async def handle(request: Request, principal: Principal) -> Response:
        return Response(200, f"{name} {principal.name} {dict(request.path_params)}".encode())

    return handle


async def _open(request: Request) -> Response:
    return Response(200, b"open")


def _router(ready: bool = True) -> Router:
    admin = superuser("test routes")
    routes: list[Route | OpenRoute] = [
        OpenRoute("GET", "/health", _open, before_ready=True),
        OpenRoute("POST", "/login", _open),
        Route("GET", "/status", _handler("status"), AUTHENTICATED),
        Route("POST", "/admin/snapshots", _handler("snap"), admin),
        Route("GET", "/admin/snapshots", _handler("snaps"), admin),
        Route("GET", "/repl/identify", _handler("identify"), REPLICATION),
        Route("GET", "/admin/users/{name}", _handler("user"), admin),
        Route("DELETE", "/admin/users/{name}", _handler("drop"), admin),
        Route("POST", "/admin/users/{name}/lock", _handler("lock"), admin),
        *(Route(method, "/kv/{key}", _handler(f"key {method}"), KEY_ACTION) for method in ("DELETE", "GET", "PUT")),
        *(
            Route(method, "/kv/{key}/incr", _handler(f"incr-path {method}"), KEY_ACTION)
            for method in ("DELETE", "GET", "PUT", "POST")
        ),
    ]
    return Router(routes, fast_prefix="/kv/", ready=lambda: ready, authenticate=_authenticate)


def _answer(router: Router, method: str, path: str, caller: str | None = "root") -> str | KvError:
    headers = {"authorization": caller} if caller else {}
    try:
        response = asyncio.run(router.dispatch(Request(method, path, headers=headers)))
    except KvError as error:
        return error
    assert isinstance(response, Response)
    return response.body.decode()


def test_open_routes_answer_without_credentials_and_the_probes_before_ready() -> None:
    assert _answer(_router(), "GET", "/health", None) == "open"
    assert _answer(_router(ready=False), "GET", "/health", None) == "open"
    assert isinstance(_answer(_router(ready=False), "POST", "/login", None), Unavailable)
    refused = _answer(_router(ready=False), "GET", "/login", None)
    assert isinstance(refused, MethodNotAllowed) and refused.allowed == ("POST",)  # 405 before 503


def test_503_then_401_come_before_routing() -> None:
    assert isinstance(_answer(_router(ready=False), "GET", "/nowhere"), Unavailable)
    assert isinstance(_answer(_router(ready=False), "GET", "/kv/a"), Unavailable)
    assert isinstance(_answer(_router(), "GET", "/nowhere", None), Unauthorized)
    assert isinstance(_answer(_router(), "PATCH", "/admin/snapshots", None), Unauthorized)


def test_404_and_405_with_a_paths_methods_come_before_the_requirement() -> None:
    router = _router()
    assert isinstance(_answer(router, "GET", "/nowhere"), NotFound)
    refused = _answer(router, "PATCH", "/admin/snapshots", "plain")
    assert isinstance(refused, MethodNotAllowed) and refused.allowed == ("GET", "POST")
    refused = _answer(router, "POST", "/admin/users/bob")
    assert isinstance(refused, MethodNotAllowed) and refused.allowed == ("DELETE", "GET")


@pytest.mark.parametrize(
    ("path", "caller", "allowed"),
    [
        ("/status", "plain", True),
        ("/admin/snapshots", "plain", False),
        ("/admin/snapshots", "shipper", False),
        ("/admin/snapshots", "root", True),
        ("/repl/identify", "plain", False),
        ("/repl/identify", "shipper", True),
        ("/repl/identify", "root", True),
    ],
)
def test_the_router_enforces_each_routes_requirement(path: str, caller: str, allowed: bool) -> None:
    answer = _answer(_router(), "GET", path, caller)
    assert isinstance(answer, str) if allowed else isinstance(answer, Forbidden)


def test_a_refusal_names_what_the_routes_need() -> None:
    assert superuser("admin routes") == Requires("superuser", "admin routes")
    refused = _answer(_router(), "GET", "/admin/snapshots", "plain")
    assert isinstance(refused, Forbidden)
    assert refused.message == "user 'plain' is not a superuser; test routes need the admin role"
    refused = _answer(_router(), "GET", "/repl/identify", "plain")
    assert isinstance(refused, Forbidden)
    assert refused.message == "user 'plain' may not use replication routes: needs the replication role"


def test_a_template_parameter_is_one_segment_an_empty_one_too() -> None:
    router = _router()
    assert _answer(router, "GET", "/admin/users/bob") == "user root {'name': 'bob'}"
    assert _answer(router, "GET", "/admin/users/") == "user root {'name': ''}"
    assert _answer(router, "POST", "/admin/users/bob/lock") == "lock root {'name': 'bob'}"
    assert isinstance(_answer(router, "GET", "/admin/users/bob/x"), NotFound)
    assert isinstance(_answer(router, "GET", "/admin/users/a/b/c"), NotFound)


def test_the_fast_prefix_takes_the_longest_tail_the_path_ends_with() -> None:
    router = _router()
    assert _answer(router, "GET", "/kv/a/b") == "key GET root {}"
    assert _answer(router, "POST", "/kv/a/incr") == "incr-path POST root {}"
    assert _answer(router, "GET", "/kv/a/incr") == "incr-path GET root {}"
    assert _answer(router, "GET", "/kv/incr") == "key GET root {}"  # the tail is '/incr', not 'incr'
    refused = _answer(router, "POST", "/kv/a")
    assert isinstance(refused, MethodNotAllowed) and refused.allowed == ("DELETE", "GET", "PUT")
    refused = _answer(router, "PATCH", "/kv/a/incr")
    assert isinstance(refused, MethodNotAllowed) and refused.allowed == ("DELETE", "GET", "POST", "PUT")
    assert isinstance(_answer(router, "GET", "/kv/a", None), Unauthorized)
