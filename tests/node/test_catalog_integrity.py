"""The catalog stays usable whatever is written to it: checked writes through the data API,
damaged documents already in a WAL or snapshot, API keys that go with their user, roles
altered in place, and the auth policy in `_sys.settings:auth`, with real nodes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.harness import ADMIN_PASSWORD, NodeProcess
from support.olddata import append_as_an_older_node_would
from support.sessions import login, session

PASSWORD = "a-long-enough-password"
DAMAGED = {
    "_sys.users:eve": b"garbage",
    "_sys.settings:hba": b"not json",
    "_sys.roles:app-rw": json.dumps({"name": "app-rw", "grants": "all of them"}).encode(),
    "_sys.settings:jwt_keys": b"[]",
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("catalog-integrity") / "node")
    try:
        yield node.start()
    finally:
        node.close()


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


def audit_events(node: NodeProcess, event: str) -> list[dict[str, Any]]:
    lines = (node.data_dir / "log" / "audit.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["event"] == event]


# -- item 2: writes through the data API are checked like the admin API's ----------------------


def test_bad_catalog_documents_through_the_data_api_are_refused_with_the_reason(shared: NodeProcess) -> None:
    audited_before = len(audit_events(shared, "catalog_written"))
    with shared.client() as admin:
        reason = error_of(admin.put("/v1/kv/_sys.settings:hba", content=b"not json"), 400, "invalid_catalog_document")
        assert "not a JSON document" in reason
        error_of(admin.put("/v1/kv/_sys.users:eve", content=b"garbage"), 400, "invalid_catalog_document")
        user = {
            "name": "eve",
            "password_hash": "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
            "roles": ["no-such-role"],
            "can_login": True,
            "locked_reason": None,
            "token_generation": 1,
            "created_at_ms": 0,
        }
        assert "unknown role" in error_of(
            admin.put("/v1/kv/_sys.users:eve", json=user), 400, "invalid_catalog_document"
        )
        assert "name" in error_of(
            admin.put("/v1/kv/_sys.users:mallory", json={**user, "roles": []}), 400, "invalid_catalog_document"
        )
        assert "built in" in error_of(
            admin.put("/v1/kv/_sys.roles:admin", json={"name": "admin", "superuser": False, "grants": []}),
            400,
            "invalid_catalog_document",
        )
        rules = {"rules": [{"action": "allow", "cidr": "not-a-network"}]}
        assert "rule 0" in error_of(admin.put("/v1/kv/_sys.settings:hba", json=rules), 400, "invalid_catalog_document")
        assert "not a setting" in error_of(
            admin.put("/v1/kv/_sys.settings:nonsense", json={}), 400, "invalid_catalog_document"
        )
        assert "token_ttl_s" in error_of(
            admin.put("/v1/kv/_sys.settings:auth", json={"token_ttl_s": 1}), 400, "invalid_catalog_document"
        )
        error_of(admin.put("/v1/kv/_sys.elsewhere", json={}), 400, "invalid_catalog_document")
        error_of(admin.post("/v1/kv/_sys.settings:hba/incr"), 400, "bad_request")
        error_of(admin.put("/v1/kv/_sys.settings:hba", params={"ttl": 60}, json={"rules": []}), 400, "bad_request")
        for required in ("_sys.settings:catalog", "_sys.settings:jwt_keys"):
            assert "cannot be deleted" in error_of(admin.delete(f"/v1/kv/{required}"), 400, "bad_request")
        txn = {"ops": [{"op": "set", "key": "plain", "value": "1"}, {"op": "set", "key": "_sys.users:x", "value": "{"}]}
        error_of(admin.post("/v1/txn", json=txn), 400, "invalid_catalog_document")
        assert admin.get("/v1/kv/plain").status_code == 404  # nothing of the refused transaction
        # The node works as before: logins, tokens, host rules.
        assert login(shared, "admin", ADMIN_PASSWORD).status_code == 200
        assert admin.get("/v1/status").json()["catalog"]["damaged"] == 0
    assert len(audit_events(shared, "catalog_written")) == audited_before  # nothing was written


def test_good_catalog_documents_through_the_data_api_are_audited(shared: NodeProcess) -> None:
    with shared.client() as admin:
        rules = {"rules": [{"action": "allow", "cidr": "127.0.0.0/8"}, {"action": "allow", "cidr": "::1/128"}]}
        assert admin.put("/v1/kv/_sys.settings:hba", json=rules).status_code == 200
        assert admin.get("/v1/admin/hba").json()["rules"] == rules["rules"]
    written = audit_events(shared, "catalog_written")[-1]
    assert (written["key"], written["op"], written["by"]) == ("_sys.settings:hba", "set", "admin")


# -- item 2: damaged documents already in the WAL or a snapshot --------------------------------


def test_damaged_documents_in_the_wal_are_reported_and_ignored_never_fatal(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()
    with node.client() as admin:
        role = {"name": "app-rw", "grants": [{"actions": ["read", "write"], "pattern": "app:*"}]}
        assert admin.post("/v1/admin/roles", json=role).status_code == 201
        for name, roles in (("eve", []), ("alice", ["app-rw"])):
            made = admin.post("/v1/admin/users", json={"name": name, "password": PASSWORD, "roles": roles})
            assert made.status_code == 201, made.text
    assert node.stop() == 0
    append_as_an_older_node_would(node.data_dir, DAMAGED)

    for restart in ("replayed from the WAL", "loaded from a snapshot"):
        node.restart()
        assert httpx.get(f"{node.url}/health", timeout=5).status_code == 200
        with node.client() as admin:  # the admin logs in (here with a key of this node's own)
            catalog = admin.get("/v1/status").json()["catalog"]
            assert catalog["damaged"] == len(DAMAGED), (restart, catalog)
            assert {document["key"] for document in catalog["documents"]} == set(DAMAGED)
            assert "kvstore_catalog_damaged_documents 4.0" in admin.get("/metrics").text
            assert admin.post("/v1/admin/checkpoint").status_code == 200
        assert login(node, "eve", PASSWORD).status_code == 401  # a damaged user is refused
        with session(node, "alice", PASSWORD) as alice:  # a damaged role grants nothing
            assert alice.put("/v1/kv/app:x", content=b"1").status_code == 403
        assert "damaged catalog document ignored" in node.log()
        assert node.stop() == 0
    node.restart()

    with node.client() as admin:  # each is repaired the way an operator would
        assert admin.post("/v1/admin/jwt-keys/rotate").status_code == 200
    with session(node, "admin", ADMIN_PASSWORD) as admin:  # signed with the repaired keys
        assert admin.put("/v1/admin/hba", json={"rules": [{"action": "allow", "cidr": "0.0.0.0/0"}]}).status_code == 200
        role = {"name": "app-rw", "superuser": False, "grants": [{"actions": ["read", "write"], "pattern": "app:*"}]}
        assert admin.put("/v1/kv/_sys.roles:app-rw", json=role).status_code == 200
        assert admin.delete("/v1/kv/_sys.users:eve").status_code == 204
        assert admin.get("/v1/status").json()["catalog"] == {"damaged": 0, "documents": []}
    with session(node, "alice", PASSWORD) as alice:
        assert alice.put("/v1/kv/app:x", content=b"1").status_code == 201


# -- item 7: roles altered in place, effective on the next request ------------------------------


def test_a_role_altered_in_place_applies_to_live_sessions(shared: NodeProcess) -> None:
    with shared.client() as admin:
        role = {"name": "editor", "grants": [{"actions": ["read"], "pattern": "doc:*"}]}
        assert admin.post("/v1/admin/roles", json=role).status_code == 201
        assert (
            admin.post("/v1/admin/users", json={"name": "ed", "password": PASSWORD, "roles": ["editor"]}).status_code
            == 201
        )
        with session(shared, "ed", PASSWORD) as ed:
            assert ed.put("/v1/kv/doc:1", content=b"1").status_code == 403
            grant = {"grant": [{"actions": ["write"], "pattern": "doc:*"}, {"actions": ["read"], "pattern": "wiki:*"}]}
            altered = admin.patch("/v1/admin/roles/editor", json=grant)
            assert altered.status_code == 200, altered.text
            assert altered.json()["grants"] == [
                {"actions": ["read", "write"], "pattern": "doc:*"},
                {"actions": ["read"], "pattern": "wiki:*"},
            ]
            assert ed.put("/v1/kv/doc:1", content=b"1").status_code == 201  # the same token
            revoke = {"revoke": [{"actions": ["write", "read"], "pattern": "doc:*"}]}
            assert admin.patch("/v1/admin/roles/editor", json=revoke).json()["grants"] == [
                {"actions": ["read"], "pattern": "wiki:*"}
            ]
            assert ed.get("/v1/kv/doc:1").status_code == 403
            assert ed.get("/v1/kv/wiki:none").status_code == 404
        error_of(admin.patch("/v1/admin/roles/writer", json={"grant": []}), 400, "bad_request")
        error_of(
            admin.patch("/v1/admin/roles/editor", json={"grant": [{"actions": ["fly"], "pattern": "*"}]}),
            400,
            "bad_request",
        )
        error_of(admin.patch("/v1/admin/roles/nobody", json={"grant": []}), 404, "not_found")
    altered = audit_events(shared, "role_altered")
    assert len(altered) == 2 and altered[0]["role"] == "editor" and altered[0]["by"] == "admin"


# -- item 8: API keys go with their user ---------------------------------------------------------


def test_a_users_api_keys_go_with_the_user_and_never_pass_to_a_new_one(shared: NodeProcess) -> None:
    with shared.client() as admin:

        def use(token: str) -> int:
            headers = {"authorization": f"Bearer {token}"}
            return httpx.put(f"{shared.url}/v1/kv/by-key", content=b"1", headers=headers, timeout=10).status_code

        def new_user(name: str) -> int:
            made = admin.post("/v1/admin/users", json={"name": name, "password": PASSWORD, "roles": ["writer"]})
            assert made.status_code == 201, made.text
            return int(made.json()["created_at_ms"])

        new_user("carol")
        key = admin.post("/v1/admin/apikeys", json={"name": "carol-key", "user": "carol"}).json()["token"]
        assert use(key) in (200, 201)
        assert admin.delete("/v1/admin/users/carol").status_code == 204
        assert "carol-key" not in {k["name"] for k in admin.get("/v1/admin/apikeys").json()["apikeys"]}
        assert audit_events(shared, "user_deleted")[-1]["apikeys"] == ["carol-key"]
        new_user("carol")
        assert use(key) == 401

        # A key document left behind (written raw, or by an older node) binds to its user's incarnation.
        created_at_ms = new_user("dave")
        kept = admin.post("/v1/admin/apikeys", json={"name": "dave-key", "user": "dave"}).json()
        raw = json.loads(admin.get(f"/v1/kv/_sys.apikeys:{kept['id']}").content)
        assert raw["user_created_at_ms"] == created_at_ms
        assert admin.delete("/v1/kv/_sys.users:dave").status_code == 204  # raw delete: keys go too
        assert admin.get(f"/v1/kv/_sys.apikeys:{kept['id']}").status_code == 404
        assert admin.put(f"/v1/kv/_sys.apikeys:{kept['id']}", json=raw).status_code == 400  # no user dave
        new_user("dave")
        assert admin.put(f"/v1/kv/_sys.apikeys:{kept['id']}", json=raw).status_code == 201
        assert use(kept["token"]) == 401  # made for the earlier dave
        legacy = {k: v for k, v in raw.items() if k != "user_created_at_ms"}
        assert admin.put(f"/v1/kv/_sys.apikeys:{kept['id']}", json=legacy).status_code == 200
        assert use(kept["token"]) == 401  # older than this dave: not his
        assert (
            admin.put(
                f"/v1/kv/_sys.apikeys:{kept['id']}", json={**legacy, "created_at_ms": int(time.time() * 1000)}
            ).status_code
            == 200
        )
        assert use(kept["token"]) in (200, 201)


# -- item 9: the auth policy is the catalog's ----------------------------------------------------


def test_the_auth_policy_lives_in_the_catalog_and_applies_on_the_next_request(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env={"KVSTORE_PASSWORD_MIN_LENGTH": "10"}).start()
    with node.client() as admin:
        seeded = admin.get("/v1/admin/settings/auth")
        assert seeded.status_code == 200 and seeded.json()["settings"]["password_min_length"] == 10  # from initdb
        changed = admin.patch("/v1/admin/settings/auth", json={"password_min_length": 16, "token_ttl_s": 60})
        assert changed.status_code == 200, changed.text
        assert changed.headers["etag"] == f'"{changed.json()["version"]}"'
        short = admin.post("/v1/admin/users", json={"name": "s", "password": "x" * 15, "roles": []})
        assert "at least 16" in error_of(short, 400, "bad_request")
        issued = login(node, "admin", ADMIN_PASSWORD).json()
        assert 55 <= issued["expires_at"] - time.time() <= 61
        error_of(admin.patch("/v1/admin/settings/auth", json={"token_ttl_s": 5}), 400, "bad_request")
        error_of(admin.patch("/v1/admin/settings/auth", json={"no_such_setting": 5}), 400, "bad_request")
        stale = admin.patch("/v1/admin/settings/auth", json={"token_ttl_s": 90}, headers={"if-match": '"1"'})
        error_of(stale, 412, "precondition_failed")
    assert audit_events(node, "auth_settings_changed")[0]["changes"] == {"password_min_length": 16, "token_ttl_s": 60}

    # Node config no longer decides it: a restart with another value leaves the catalog's in force.
    node.stop()
    node.extra_env = {"KVSTORE_TOKEN_TTL_S": "7200"}
    node.restart()
    assert 55 <= login(node, "admin", ADMIN_PASSWORD).json()["expires_at"] - time.time() <= 61
    assert "token_ttl_s" in node.log() and "kvctl settings set" in node.log()

    # A catalog from before the policy was kept there gets it from the node's settings.
    with node.client() as admin:
        assert admin.delete("/v1/kv/_sys.settings:auth").status_code == 204
    node.stop()
    node.restart()
    with node.client() as admin:
        assert admin.get("/v1/admin/settings/auth").json()["settings"]["token_ttl_s"] == 7200
        deadline = time.monotonic() + 30  # written in the background once the node is up
        while admin.get("/v1/kv/_sys.settings:auth").status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads(admin.get("/v1/kv/_sys.settings:auth").content)["token_ttl_s"] == 7200
