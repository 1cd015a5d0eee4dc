"""Users and roles through the admin API of a real node: permissions, 401 vs 403, invalidation."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from support.harness import NodeProcess
from support.sessions import session

ALICE_PASSWORD = "alice-password-1"


@pytest.fixture(scope="module")
def catalog_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("catalog") / "node")
    try:
        node.start()
        with node.client() as admin:
            role = {"name": "app-writer", "grants": [{"actions": ["read", "write"], "pattern": "app:*"}]}
            assert admin.post("/v1/admin/roles", json=role).status_code == 201
        yield node
    finally:
        node.close()


def create_user(admin: httpx.Client, name: str, roles: list[str]) -> None:
    response = admin.post("/v1/admin/users", json={"name": name, "password": ALICE_PASSWORD, "roles": roles})
    assert response.status_code == 201, response.text
    assert "password_hash" not in response.text and ALICE_PASSWORD not in response.text


def test_a_role_grants_exactly_its_actions_on_its_patterns(catalog_node: NodeProcess) -> None:
    with catalog_node.client() as admin:
        create_user(admin, "alice", ["app-writer"])
        assert admin.put("/v1/kv/other:x", content=b"secret").status_code == 201
    with session(catalog_node, "alice", ALICE_PASSWORD) as alice:
        assert alice.put("/v1/kv/app:x", content=b"1").status_code == 201
        assert alice.get("/v1/kv/app:x").content == b"1"
        assert alice.put("/v1/kv/other:x", content=b"1").status_code == 403
        assert alice.get("/v1/kv/other:x").status_code == 403
        assert alice.delete("/v1/kv/app:x").status_code == 403  # no delete action in the grant
        assert alice.get("/v1/kv/_sys.users:admin").status_code == 403
        assert alice.get("/v1/admin/users").status_code == 403
        assert alice.post("/v1/admin/checkpoint").status_code == 403
        keys = [item["key"] for item in alice.get("/v1/kv", params={"prefix": ""}).json()["keys"]]
        assert keys == ["app:x"]  # neither other:x nor any catalog key
        txn = {"ops": [{"op": "set", "key": "app:y", "value": "1"}, {"op": "set", "key": "other:y", "value": "1"}]}
        assert alice.post("/v1/txn", json=txn).status_code == 403
        assert alice.get("/v1/kv/app:y").status_code == 404  # nothing of the refused transaction applied
    anonymous = httpx.get(f"{catalog_node.url}/v1/kv/app:x", timeout=10)
    assert anonymous.status_code == 401


def test_a_reader_reads_and_writes_nothing(catalog_node: NodeProcess) -> None:
    with catalog_node.client() as admin:
        create_user(admin, "rita", ["reader"])
        admin.put("/v1/kv/doc", content=b"v")
    with session(catalog_node, "rita", ALICE_PASSWORD) as rita:
        assert rita.get("/v1/kv/doc").status_code == 200
        assert rita.put("/v1/kv/doc", content=b"x").status_code == 403
        assert rita.post("/v1/kv/doc/incr").status_code == 403


@pytest.mark.parametrize("change", ["password", "lock", "delete"])
def test_each_change_cuts_off_live_tokens_at_once(catalog_node: NodeProcess, change: str) -> None:
    name = f"victim-{change}"
    with catalog_node.client() as admin:
        create_user(admin, name, ["writer"])
        victim = session(catalog_node, name, ALICE_PASSWORD)
        assert victim.put("/v1/kv/v", content=b"1").status_code in (200, 201)
        if change == "password":
            assert admin.put(f"/v1/admin/users/{name}/password", json={"password": "a-new-password"}).status_code == 204
        elif change == "lock":
            assert admin.post(f"/v1/admin/users/{name}/lock", json={"reason": "suspicious activity"}).status_code == 200
        elif change == "revoke":
            assert admin.post(f"/v1/admin/users/{name}/roles", json={"revoke": ["writer"]}).status_code == 200
        else:
            assert admin.delete(f"/v1/admin/users/{name}").status_code == 204
        assert victim.put("/v1/kv/v", content=b"2").status_code == 401
        if change == "delete":  # a user re-created with the same name does not revive old tokens
            create_user(admin, name, ["writer"])
            assert victim.put("/v1/kv/v", content=b"3").status_code == 401
        if change == "lock":
            refused = httpx.post(
                f"{catalog_node.url}/v1/auth/login", json={"username": name, "password": ALICE_PASSWORD}, timeout=10
            )
            assert refused.status_code == 401
            assert admin.post(f"/v1/admin/users/{name}/unlock").status_code == 200
            session(catalog_node, name, ALICE_PASSWORD).close()
        victim.close()


def test_bad_catalog_requests_get_clear_errors(catalog_node: NodeProcess) -> None:
    with catalog_node.client() as admin:
        create_user(admin, "dup", [])
        again = admin.post("/v1/admin/users", json={"name": "dup", "password": ALICE_PASSWORD, "roles": []})
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        cases = [
            {"name": "bad name", "password": ALICE_PASSWORD, "roles": []},
            {"name": "short", "password": "x", "roles": []},
            {"name": "norole", "password": ALICE_PASSWORD, "roles": ["no-such-role"]},
        ]
        for body in cases:
            assert admin.post("/v1/admin/users", json=body).status_code == 400, body
        assert admin.delete("/v1/admin/roles/admin").status_code == 400
        bad_role = {"name": "r", "grants": [{"actions": ["fly"], "pattern": "*"}]}
        assert admin.post("/v1/admin/roles", json=bad_role).status_code == 400
        assert admin.get("/v1/admin/users/nobody").status_code == 404
        users = admin.get("/v1/admin/users").json()["users"]
        assert {"admin", "dup"} <= {user["name"] for user in users}
        assert all("password_hash" not in user for user in users)


def test_catalog_changes_are_audited_and_survive_sigkill(catalog_node: NodeProcess) -> None:
    with catalog_node.client() as admin:
        create_user(admin, "durable", ["reader"])
    catalog_node.kill()
    catalog_node.restart()
    session(catalog_node, "durable", ALICE_PASSWORD).close()
    with catalog_node.client() as admin:
        assert admin.get("/v1/admin/roles/app-writer").json()["grants"][0]["pattern"] == "app:*"
    events = [json.loads(line) for line in (catalog_node.data_dir / "log" / "audit.jsonl").read_text().splitlines()]
    created = [e for e in events if e["event"] == "user_created" and e["user"] == "durable"]
    assert created and created[0]["by"] == "admin"


def test_api_keys_act_as_their_user_until_revoked(catalog_node: NodeProcess) -> None:
    with catalog_node.client() as admin:
        create_user(admin, "keyholder", ["writer"])
        made = admin.post("/v1/admin/apikeys", json={"name": "k8s-prod-app-01", "user": "keyholder"})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        assert token.startswith("kv_") and made.json()["user"] == "keyholder"
        secret = token.removeprefix("kv_").partition("_")[2]  # the secret may itself hold '_'
        assert len(secret) >= 32
        bound = admin.post(
            "/v1/admin/apikeys", json={"name": "office-only", "user": "keyholder", "cidrs": ["10.0.0.0/8"]}
        ).json()["token"]
        expired = admin.post(
            "/v1/admin/apikeys", json={"name": "old", "user": "keyholder", "expires_at": 1_000_000_000}
        ).json()["token"]
        assert admin.post("/v1/admin/apikeys", json={"name": "k8s-prod-app-01", "user": "keyholder"}).status_code == 409
        assert admin.post("/v1/admin/apikeys", json={"name": "x", "user": "nobody"}).status_code == 400
        assert (
            admin.post("/v1/admin/apikeys", json={"name": "y", "user": "keyholder", "cidrs": ["nope"]}).status_code
            == 400
        )

        def use(secret: str) -> int:
            headers = {"authorization": f"Bearer {secret}"}
            return httpx.put(f"{catalog_node.url}/v1/kv/by-key", content=b"1", headers=headers, timeout=10).status_code

        assert use(token) in (200, 201)
        assert use(bound) == 401  # the tests talk from 127.0.0.1
        assert use(expired) == 401
        assert use(token[:-2] + "xx") == 401
        listed = admin.get("/v1/admin/apikeys").json()["apikeys"]
        assert {key["name"] for key in listed} >= {"k8s-prod-app-01", "office-only", "old"}
        mine = next(key for key in listed if key["name"] == "k8s-prod-app-01")
        assert mine["last_used_at"] is not None
        assert secret not in admin.get("/v1/admin/apikeys").text and "sha256" not in str(listed)
        assert admin.post("/v1/admin/users/keyholder/lock", json={"reason": "x"}).status_code == 200
        assert use(token) == 401  # a locked user's keys stop working
        assert admin.post("/v1/admin/users/keyholder/unlock").status_code == 200
        assert use(token) in (200, 201)
        assert admin.delete("/v1/admin/apikeys/k8s-prod-app-01").status_code == 204
        assert use(token) == 401
    audit = (catalog_node.data_dir / "log" / "audit.jsonl").read_text()
    assert '"apikey_created"' in audit and '"apikey_revoked"' in audit
    assert secret not in audit and secret not in catalog_node.log()
