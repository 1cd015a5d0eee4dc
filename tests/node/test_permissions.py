"""The permission matrix over real HTTP: who may do what to which key, and 401 (who are you?) vs 403 (not allowed).

Callers: the superuser, each built-in role, a custom role (read+write on `app:*`, read on `pub:*`), custom roles
on `*` and on `_sys.*`, a user with no role, and an API key of a custom-role user. One node serves the whole module
and every caller logs in once: argon2 makes each login and each user creation cost ~0.3 s on a small machine.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.harness import NodeProcess
from support.sessions import bearer, login_token

PASSWORD = "permission-test-password"

CUSTOM_GRANTS = [{"actions": ["read", "write"], "pattern": "app:*"}, {"actions": ["read"], "pattern": "pub:*"}]
DATA_ACTIONS = ["read", "write", "delete"]
CUSTOM_ROLES: dict[str, list[dict[str, Any]]] = {
    "app-rw": CUSTOM_GRANTS,
    "everything": [{"actions": DATA_ACTIONS, "pattern": "*"}],
    "catalogs": [{"actions": DATA_ACTIONS, "pattern": "_sys.*"}],
    "probe": [{"actions": ["read"], "pattern": "probe:*"}],  # a catalog document that forbidden writes aim at
}
# caller -> (user, roles); "admin" is the bootstrap superuser and "apikey" is created from its user below.
USERS: dict[str, tuple[str, list[str]]] = {
    "writer": ("w-user", ["writer"]),
    "reader": ("r-user", ["reader"]),
    "replication": ("repl-user", ["replication"]),
    "custom": ("custom-user", ["app-rw"]),
    "apikey": ("key-user", ["app-rw"]),
    "norole": ("norole-user", []),
    "star": ("star-user", ["everything"]),
    "sysglob": ("sysglob-user", ["catalogs"]),
}
CALLERS = ["admin", *USERS]
NON_SUPERUSERS = list(USERS)

# What each caller may do to a key of each kind: G = GET, P = PUT, I = POST .../incr, D = DELETE.
# fmt: off
GRANTS: dict[str, dict[str, str]] = {
    #               app:*            pub:*            other:*
    "admin":       {"app": "GPID",  "pub": "GPID",  "other": "GPID"},
    "writer":      {"app": "GPID",  "pub": "GPID",  "other": "GPID"},
    "reader":      {"app": "G",     "pub": "G",     "other": "G"},
    "replication": {"app": "",      "pub": "",      "other": ""},     # replication grants no data action
    "custom":      {"app": "GPI",   "pub": "G",     "other": ""},     # no delete, even on app:*
    "apikey":      {"app": "GPI",   "pub": "G",     "other": ""},     # acts exactly as its app-rw user
    "norole":      {"app": "",      "pub": "",      "other": ""},
    "star":        {"app": "GPID",  "pub": "GPID",  "other": "GPID"},
    "sysglob":     {"app": "",      "pub": "",      "other": ""},     # `_sys.*` matches no data key
}
# fmt: on
OPS = {"G": "GET", "P": "PUT", "I": "INCR", "D": "DELETE"}
ALLOWED_STATUS = {"GET": 200, "PUT": 200, "INCR": 200, "DELETE": 204}  # on a key that exists
MATRIX = [
    (caller, op, kind, ALLOWED_STATUS[op] if letter in GRANTS[caller][kind] else 403)
    for caller in CALLERS
    for kind in ("app", "pub", "other")
    for letter, op in OPS.items()
]

PROBE_KEY = "_sys.roles:probe"
# An attacker's write: turn a role into a superuser role. Valid JSON, so a server bug cannot break the catalog.
ESCALATED_ROLE = json.dumps({"name": "probe", "superuser": True, "grants": []})
# No data grant, however wide, reaches a catalog key; writes aim at a role nobody holds, reads at the crown jewels.
SYS_ROWS = [
    *[(caller, "GET", "_sys.users:admin", 403) for caller in NON_SUPERUSERS],
    *[(caller, "GET", "_sys.settings:jwt_keys", 403) for caller in NON_SUPERUSERS],
    *[(caller, op, PROBE_KEY, 403) for caller in NON_SUPERUSERS for op in ("PUT", "INCR", "DELETE")],
    ("admin", "GET", "_sys.users:admin", 200),
    ("admin", "GET", "_sys.settings:jwt_keys", 200),
    ("admin", "GET", PROBE_KEY, 200),
]

# (caller, ops, expected status). "create" is a set with if_absent (the general op parser, not the fast path).
# fmt: off
TXN_ROWS = [
    ("admin",       "set app, del other, check _sys", 200),
    ("writer",      "set app, create pub, del other, check pub", 200),
    ("writer",      "set app, check _sys", 403),     # `*` never covers catalogs
    ("reader",      "check app, check other", 200),
    ("reader",      "check app, set app", 403),
    ("reader",      "del pub", 403),
    ("replication", "check pub", 403),
    ("norole",      "check pub", 403),
    ("custom",      "set app, create app, check pub", 200),
    ("custom",      "set app, del app", 403),        # write but no delete on app:*: the set is not applied either
    ("custom",      "set app, set other", 403),
    ("custom",      "set other, set app", 403),      # the forbidden op first
    ("custom",      "set app, check other", 403),
    ("custom",      "create other", 403),
    ("custom",      "set pub", 403),
    ("apikey",      "set app, check pub", 200),
    ("apikey",      "set app, del app", 403),
    ("star",        "set app, del other, check pub", 200),
    ("star",        "set app, check _sys", 403),
    ("star",        "set _sys", 403),
    ("sysglob",     "set _sys", 403),
    ("sysglob",     "create _sys", 403),
    ("sysglob",     "del _sys", 403),
    ("sysglob",     "check _sys", 403),
    ("sysglob",     "set app", 403),
]
# fmt: on
SYS_TXN_KEYS = {"set": PROBE_KEY, "create": "_sys.roles:sneaky", "del": PROBE_KEY, "check": "_sys.users:admin"}

# (method, path, what the superuser gets); everyone else gets 403.
ADMIN_ROUTES = [
    ("GET", "/v1/admin/users", 200),
    ("GET", "/v1/admin/roles", 200),
    ("POST", "/v1/admin/roles", 201),
    ("GET", "/v1/admin/apikeys", 200),
    ("POST", "/v1/admin/checkpoint", 200),
    ("GET", "/v1/admin/snapshots", 200),
    ("GET", "/v1/admin/wal", 200),
]
# Changes a non-superuser would make to promote itself; each must be refused and leave nothing behind.
ESCALATIONS = ["grant-self-admin", "create-admin-user", "apikey-for-admin", "set-admin-password", "drop-role"]

# Requests that must be 401 without valid credentials, whatever the caller would be allowed with them.
AUTH_TARGETS = [
    ("GET", "/v1/kv/app:seed"),
    ("GET", "/v1/kv/other:seed"),  # forbidden to the custom user: 401 must come before the grant check
    ("GET", "/v1/kv/_sys.users:admin"),
    ("PUT", "/v1/kv/app:seed"),
    ("DELETE", "/v1/kv/other:seed"),
    ("POST", "/v1/kv/app:seed/incr"),
    ("POST", "/v1/txn"),
    ("GET", "/v1/kv"),
    ("GET", "/v1/admin/users"),
    ("POST", "/v1/admin/checkpoint"),
    ("GET", "/v1/status"),
]
BAD_CREDENTIALS = [
    "none",
    "basic",
    "bearer-alone",
    "not-a-jwt",
    "garbage-jwt",
    "flipped-signature",
    "forged-subject",
    "unknown-apikey",
    "wrong-apikey-secret",
]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Well-formed, but with no key id and a made-up signature.
GARBAGE_JWT = ".".join(_b64(part) for part in (b'{"alg":"HS256","typ":"JWT"}', b'{"sub":"admin"}', b"signature"))


def create_user(admin: httpx.Client, name: str, roles: list[str]) -> None:
    response = admin.post("/v1/admin/users", json={"name": name, "password": PASSWORD, "roles": roles})
    assert response.status_code == 201, response.text


def create_role(admin: httpx.Client, name: str, grants: list[dict[str, Any]], superuser: bool = False) -> None:
    response = admin.post("/v1/admin/roles", json={"name": name, "grants": grants, "superuser": superuser})
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("permissions") / "node")
    try:
        node.start()
        with node.client() as admin:
            for name, grants in CUSTOM_ROLES.items():
                create_role(admin, name, grants)
            for user, roles in USERS.values():
                create_user(admin, user, roles)
            for kind in ("app", "pub", "other"):
                assert admin.put(f"/v1/kv/{kind}:seed", content=b"seed").status_code == 201
        yield node
    finally:
        node.close()


@pytest.fixture(scope="module")
def tokens(node: NodeProcess) -> dict[str, str]:
    """caller -> bearer token: a login JWT, or for "apikey" an API key of its user."""
    found = {caller: login_token(node, user, PASSWORD) for caller, (user, _) in USERS.items() if caller != "apikey"}
    found["admin"] = node.token()
    with node.client() as admin:
        made = admin.post("/v1/admin/apikeys", json={"name": "perm-key", "user": USERS["apikey"][0]})
        assert made.status_code == 201, made.text
        found["apikey"] = made.json()["token"]
    return found


@pytest.fixture(scope="module")
def clients(node: NodeProcess, tokens: dict[str, str]) -> Iterator[dict[str, httpx.Client]]:
    opened = {caller: bearer(node, token) for caller, token in tokens.items()}
    yield opened
    for client in opened.values():
        client.close()


@pytest.fixture(scope="module")
def anonymous(node: NodeProcess) -> Iterator[httpx.Client]:
    """No Authorization header unless a request brings its own; one client, as making one costs ~50 ms."""
    with httpx.Client(base_url=node.url, timeout=10) as client:
        yield client


@pytest.fixture
def admin(clients: dict[str, httpx.Client]) -> httpx.Client:
    return clients["admin"]


def request_key(client: httpx.Client, op: str, key: str, body: bytes = b"42") -> httpx.Response:
    if op == "GET":
        return client.get(f"/v1/kv/{key}")
    if op == "PUT":
        return client.put(f"/v1/kv/{key}", content=body)
    if op == "INCR":
        return client.post(f"/v1/kv/{key}/incr")
    assert op == "DELETE"
    return client.delete(f"/v1/kv/{key}")


def assert_refused(response: httpx.Response, status: int = 403) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == {401: "unauthorized", 403: "forbidden"}[status] and error["message"], error
    if status == 401:
        assert response.headers["www-authenticate"].lower().startswith("bearer"), response.headers


def value_of(admin: httpx.Client, key: str) -> bytes | None:
    response = admin.get(f"/v1/kv/{key}")
    assert response.status_code in (200, 404), response.text
    return response.content if response.status_code == 200 else None


def probe_untouched(admin: httpx.Client) -> None:
    document = json.loads(value_of(admin, PROBE_KEY) or b"null")
    assert document == {"name": "probe", "superuser": False, "grants": CUSTOM_ROLES["probe"]}


def listing_status(client: httpx.Client, prefix: str) -> int:
    """A listing that could show nothing (no read grant can cover the prefix) is refused at once."""
    response = client.get("/v1/kv", params={"prefix": prefix})
    if response.status_code == 403:
        assert response.json()["error"]["code"] == "forbidden", response.text
    return response.status_code


def all_keys(client: httpx.Client, prefix: str = "") -> list[str]:
    """Every key a listing shows, paged in small pages so hidden keys would also have to stay out of cursors."""
    keys: list[str] = []
    after: str | None = None
    while True:
        params = {"prefix": prefix, "limit": 7, **({"after": after} if after else {})}
        response = client.get("/v1/kv", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        keys.extend(item["key"] for item in page["keys"])
        after = page["next_after"]
        if after is None:
            return keys
        assert after == keys[-1]


# -- listing (first: it reads every key, so it runs while there are few) ------------------------------------------


@pytest.mark.parametrize("caller", CALLERS)
def test_listing_shows_exactly_the_keys_the_caller_may_read(
    caller: str, clients: dict[str, httpx.Client], admin: httpx.Client
) -> None:
    client = clients[caller]
    holds_no_read = caller in ("replication", "norole", "sysglob")  # `_sys.*` matches no data key
    assert listing_status(client, "") == (403 if holds_no_read else 200)
    listed = [] if holds_no_read else all_keys(client)
    # The oracle is the data API itself: a key is readable when GET on it is not refused.
    readable = [key for key in all_keys(admin) if client.get(f"/v1/kv/{key}").status_code != 403]
    assert listed == readable
    seeds = {f"{kind}:seed" for kind, ops in GRANTS[caller].items() if "G" in ops}
    assert seeds == {key for key in listed if key.endswith(":seed")}
    sys_keys = [key for key in listed if key.startswith("_sys.")]
    if caller == "admin":
        assert "_sys.users:admin" in sys_keys and all_keys(client, "_sys.") == sys_keys
    else:
        assert sys_keys == [] and listing_status(client, "_sys.") == 403


# -- the data API: GET, PUT, POST .../incr, DELETE ------------------------------------------------------------------


@pytest.mark.parametrize(("caller", "op", "kind", "expected"), MATRIX, ids=str)
def test_data_access_follows_the_grants(
    caller: str, op: str, kind: str, expected: int, clients: dict[str, httpx.Client], admin: httpx.Client
) -> None:
    key = f"{kind}:{caller}-{op.lower()}"
    assert admin.put(f"/v1/kv/{key}", content=b"41").status_code in (200, 201)
    response = request_key(clients[caller], op, key)
    if expected == 403:
        assert_refused(response)
        assert value_of(admin, key) == b"41"  # nothing changed
        return
    assert response.status_code == expected, response.text
    after = {"GET": b"41", "PUT": b"42", "INCR": b"42", "DELETE": None}[op]
    assert value_of(admin, key) == after
    if op == "GET":
        assert response.content == b"41"


@pytest.mark.parametrize(("caller", "op", "key", "expected"), SYS_ROWS, ids=str)
def test_catalog_keys_are_for_superusers_only(
    caller: str, op: str, key: str, expected: int, clients: dict[str, httpx.Client], admin: httpx.Client
) -> None:
    response = request_key(clients[caller], op, key, body=ESCALATED_ROLE.encode())
    if expected == 403:
        assert_refused(response)
    else:
        assert response.status_code == expected, response.text
        assert isinstance(json.loads(response.content), dict)  # the catalog document itself
    probe_untouched(admin)


# -- transactions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("caller", "ops", "expected"), TXN_ROWS, ids=str)
def test_a_transaction_needs_every_grant_or_applies_nothing(
    caller: str, ops: str, expected: int, clients: dict[str, httpx.Client], admin: httpx.Client
) -> None:
    tag = uuid.uuid4().hex[:8]
    body: list[dict[str, Any]] = []
    for index, spec in enumerate(part.strip() for part in ops.split(",")):
        op, kind = spec.split()
        key = SYS_TXN_KEYS[op] if kind == "_sys" else f"{kind}:txn-{tag}-{index}"
        if op in ("del", "check") and kind != "_sys":
            assert admin.put(f"/v1/kv/{key}", content=b"old").status_code == 201
        if op in ("set", "create"):
            body.append({"op": "set", "key": key, "value": ESCALATED_ROLE if kind == "_sys" else "new"})
            if op == "create":
                body[-1]["if_absent"] = True
        else:
            body.append({"op": op, "key": key})
    response = clients[caller].post("/v1/txn", json={"ops": body})
    if expected == 200:
        assert response.status_code == 200, response.text
        assert [result["op"] for result in response.json()["results"]] == [item["op"] for item in body]
    else:
        assert_refused(response)
        probe_untouched(admin)
        assert value_of(admin, "_sys.roles:sneaky") is None
    for item in (item for item in body if not item["key"].startswith("_sys.")):
        if expected == 200:
            wanted = {"set": b"new", "del": None, "check": b"old"}[item["op"]]
        else:
            wanted = None if item["op"] == "set" else b"old"  # as before the refused transaction
        assert value_of(admin, item["key"]) == wanted, item


# -- admin routes and status -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path", "admin_status"), ADMIN_ROUTES, ids=str)
def test_admin_routes_are_for_superusers_only(
    caller: str, method: str, path: str, admin_status: int, clients: dict[str, httpx.Client], admin: httpx.Client
) -> None:
    role = f"made-by-{caller}"
    body = {"name": role, "superuser": True, "grants": []} if (method, path) == ("POST", "/v1/admin/roles") else None
    response = clients[caller].request(method, path, json=body)
    if caller != "admin":
        assert_refused(response)
        if body is not None:
            assert admin.get(f"/v1/admin/roles/{role}").status_code == 404
        return
    assert response.status_code == admin_status, response.text


@pytest.mark.parametrize("caller", NON_SUPERUSERS)
@pytest.mark.parametrize("attempt", ESCALATIONS)
def test_no_one_but_a_superuser_can_promote_anyone(
    caller: str, attempt: str, clients: dict[str, httpx.Client], admin: httpx.Client
) -> None:
    user = USERS[caller][0]
    sneaky = f"sneaky-{caller}"
    method, path, body = {
        "grant-self-admin": ("POST", f"/v1/admin/users/{user}/roles", {"grant": ["admin"]}),
        "create-admin-user": ("POST", "/v1/admin/users", {"name": sneaky, "password": PASSWORD, "roles": ["admin"]}),
        "apikey-for-admin": ("POST", "/v1/admin/apikeys", {"name": sneaky, "user": "admin"}),
        "set-admin-password": ("PUT", "/v1/admin/users/admin/password", {"password": PASSWORD}),
        "drop-role": ("DELETE", "/v1/admin/roles/app-rw", None),
    }[attempt]
    assert_refused(clients[caller].request(method, path, json=body))
    assert admin.get(f"/v1/admin/users/{user}").json()["roles"] == USERS[caller][1]
    assert admin.get(f"/v1/admin/users/{sneaky}").status_code == 404
    assert sneaky not in {key["name"] for key in admin.get("/v1/admin/apikeys").json()["apikeys"]}
    assert admin.get("/v1/admin/roles/app-rw").status_code == 200  # also: the admin's token still works


@pytest.mark.parametrize("caller", CALLERS)
def test_status_is_open_to_every_authenticated_caller(caller: str, clients: dict[str, httpx.Client]) -> None:
    response = clients[caller].get("/v1/status")
    assert response.status_code == 200, response.text
    assert "role" in response.json()


# -- 401 vs 403 ------------------------------------------------------------------------------------------------------


def bad_authorization(name: str, tokens: dict[str, str]) -> str | None:
    """An Authorization header that identifies no one; built from real credentials where that makes it sharper."""
    header, claims, signature = tokens["custom"].split(".")
    key_id, _, secret = tokens["apikey"].removeprefix("kv_").partition("_")
    forged = json.loads(_unb64(claims)) | {"sub": "admin"}
    # Not the signature's last character: its low bits are padding and may decode to the same bytes.
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    return {
        "none": None,
        "basic": "Basic YWRtaW46eA==",
        "bearer-alone": "Bearer",
        "not-a-jwt": "Bearer garbage",
        "garbage-jwt": f"Bearer {GARBAGE_JWT}",
        "flipped-signature": f"Bearer {header}.{claims}.{flipped}",
        "forged-subject": f"Bearer {header}.{_b64(json.dumps(forged).encode())}.{signature}",
        "unknown-apikey": "Bearer kv_000000000000_xxxx",
        "wrong-apikey-secret": f"Bearer kv_{key_id}_{'x' * len(secret)}",
    }[name]


@pytest.mark.parametrize("credential", BAD_CREDENTIALS)
@pytest.mark.parametrize(("method", "path"), AUTH_TARGETS, ids=str)
def test_without_valid_credentials_every_route_is_401_before_any_grant_check(
    credential: str, method: str, path: str, anonymous: httpx.Client, tokens: dict[str, str]
) -> None:
    authorization = bad_authorization(credential, tokens)
    headers = {} if authorization is None else {"authorization": authorization}
    body = {"ops": [{"op": "check", "key": "app:seed"}]} if path == "/v1/txn" else None
    assert_refused(anonymous.request(method, path, headers=headers, json=body), 401)


def test_the_same_request_is_401_unauthenticated_and_403_authenticated(
    anonymous: httpx.Client, clients: dict[str, httpx.Client]
) -> None:
    for method, path in [("GET", "/v1/kv/other:seed"), ("GET", "/v1/kv/_sys.users:admin"), ("GET", "/v1/admin/users")]:
        assert_refused(anonymous.request(method, path), 401)
        assert_refused(clients["custom"].request(method, path), 403)


# -- grants change on the next request -------------------------------------------------------------------------------


def test_a_grant_and_a_revoke_apply_to_the_live_token_on_its_next_request(
    node: NodeProcess, admin: httpx.Client
) -> None:
    """PostgreSQL's GRANT: privileges are resolved per request, so the session goes on with the new ones."""
    create_user(admin, "late", [])
    with bearer(node, login_token(node, "late", PASSWORD)) as session:
        assert_refused(session.put("/v1/kv/other:late", content=b"1"))
        granted = admin.post("/v1/admin/users/late/roles", json={"grant": ["writer"]})
        assert granted.status_code == 200 and granted.json()["roles"] == ["writer"], granted.text
        assert session.put("/v1/kv/other:late", content=b"1").status_code == 201
        assert admin.post("/v1/admin/users/late/roles", json={"revoke": ["writer"]}).status_code == 200
        assert_refused(session.put("/v1/kv/other:late", content=b"2"))  # 403: still logged in, no longer allowed
        assert session.get("/v1/status").status_code == 200
    assert value_of(admin, "other:late") == b"1"


def test_an_api_key_follows_its_users_roles_at_once(node: NodeProcess, admin: httpx.Client) -> None:
    create_user(admin, "late-key-user", [])
    made = admin.post("/v1/admin/apikeys", json={"name": "late-key", "user": "late-key-user"})
    assert made.status_code == 201, made.text
    with bearer(node, made.json()["token"]) as key:
        assert_refused(key.put("/v1/kv/app:late-key", content=b"1"))
        assert admin.post("/v1/admin/users/late-key-user/roles", json={"grant": ["app-rw"]}).status_code == 200
        # An API key carries no token generation: the same key works with the new grants at once.
        assert key.put("/v1/kv/app:late-key", content=b"2").status_code == 201
        assert_refused(key.put("/v1/kv/other:late-key", content=b"2"))
        assert admin.post("/v1/admin/users/late-key-user/roles", json={"revoke": ["app-rw"]}).status_code == 200
        assert_refused(key.put("/v1/kv/app:late-key", content=b"3"))
    assert value_of(admin, "app:late-key") == b"2"


def test_a_deleted_role_grants_nothing_on_the_next_request(node: NodeProcess, admin: httpx.Client) -> None:
    create_role(admin, "doomed", [{"actions": ["read", "write"], "pattern": "doomed:*"}])
    create_user(admin, "doomed-user", ["doomed"])
    with bearer(node, login_token(node, "doomed-user", PASSWORD)) as old:
        assert old.put("/v1/kv/doomed:x", content=b"1").status_code == 201
        assert admin.delete("/v1/admin/roles/doomed").status_code == 204
        # Deleting a role ends its memberships like a revoke: on their next request the holders lack it.
        assert_refused(old.put("/v1/kv/doomed:x", content=b"2"))
        assert_refused(old.get("/v1/kv/doomed:x"))
    with bearer(node, login_token(node, "doomed-user", PASSWORD)) as fresh:
        assert_refused(fresh.put("/v1/kv/doomed:x", content=b"3"))
        assert_refused(fresh.get("/v1/kv/doomed:x"))
    assert value_of(admin, "doomed:x") == b"1"


def test_a_recreated_role_does_not_regrant_its_former_holders(node: NodeProcess, admin: httpx.Client) -> None:
    """Like PostgreSQL's DROP ROLE, deleting a role ends every membership in it, in the same transaction:
    a new role of the same name (with any grants, even superuser) starts with no members."""
    create_role(admin, "reborn", [{"actions": ["read"], "pattern": "reborn:*"}])
    create_user(admin, "reborn-user", ["reborn"])
    with bearer(node, login_token(node, "reborn-user", PASSWORD)) as holder:
        assert admin.delete("/v1/admin/roles/reborn").status_code == 204
        create_role(admin, "reborn", [{"actions": DATA_ACTIONS, "pattern": "*"}], superuser=True)
        assert_refused(holder.put("/v1/kv/other:reborn", content=b"1"))
        assert_refused(holder.get("/v1/admin/users"))
    with bearer(node, login_token(node, "reborn-user", PASSWORD)) as fresh:
        assert_refused(fresh.put("/v1/kv/other:reborn", content=b"1"))
        assert_refused(fresh.get("/v1/admin/users"))
    assert "reborn" not in admin.get("/v1/admin/users/reborn-user").json()["roles"]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/admin/nosuch"), ("GET", "/v1/admin/checkpoint"), ("GET", "/v1/admin/usersx")]
)
def test_without_credentials_no_route_is_revealed(node: NodeProcess, method: str, path: str) -> None:
    assert httpx.request(method, node.url + path, timeout=10).status_code == 401


def test_catalog_routes_match_whole_path_segments(admin: httpx.Client) -> None:
    assert admin.get("/v1/admin/usersadmin").status_code == 404
