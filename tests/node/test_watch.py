"""GET /v1/watch against a real node: committed changes in commit order with their LSNs, a
transaction's together, resume after an LSN, 410 once the WAL is recycled, only keys the
watcher may read, and the cap on watchers."""

from __future__ import annotations

import base64

import httpx

from support.harness import NodeProcess
from support.sessions import bearer, login_token
from support.waiting import wait_until
from support.watching import WAIT_S, Watch


def _client(node: NodeProcess, token: str | None = None) -> httpx.Client:
    return node.client() if token is None else bearer(node, token)


def test_events_come_in_commit_order_a_transaction_together_and_resume_after_an_lsn(node: NodeProcess) -> None:
    watch = Watch(_client(node), {"prefix": "app:"})
    assert watch.status == 200
    with node.client() as admin:
        assert admin.put("/v1/kv/app:a", content=b"1").status_code == 201
        assert admin.put("/v1/kv/other", content=b"x").status_code == 201  # not under the prefix
        ops = [{"op": "set", "key": "app:b", "value": "2"}, {"op": "del", "key": "app:a"}]
        assert admin.post("/v1/txn", json={"ops": ops}).status_code == 200
        assert admin.put("/v1/kv/app:c", content=b"3").status_code == 201
    first, b, a_gone, c = watch.events(4)
    watch.close()
    assert (first["type"], first["key"], base64.b64decode(first["value_base64"])) == ("set", "app:a", b"1")
    assert (b["type"], b["key"], a_gone["type"], a_gone["key"]) == ("set", "app:b", "del", "app:a")
    assert b["lsn"] == a_gone["lsn"]  # one transaction, one LSN
    assert c["key"] == "app:c"
    assert b["version"] < c["version"] and first["version"] < b["version"]
    # Resuming after the first event's LSN gives the rest, nothing missed or repeated.
    resumed = Watch(_client(node), {"prefix": "app:", "from_lsn": first["lsn"]})
    assert [(e["type"], e["key"], e["lsn"]) for e in resumed.events(3)] == [
        (e["type"], e["key"], e["lsn"]) for e in (b, a_gone, c)
    ]
    with node.client() as admin:
        assert admin.put("/v1/kv/app:d", content=b"4").status_code == 201
    assert resumed.events(1)[0]["key"] == "app:d"
    resumed.close()


def test_a_key_whose_ttl_ran_out_is_an_expire_event(node: NodeProcess) -> None:
    watch = Watch(_client(node), {"prefix": "ttl:"})
    with node.client() as admin:
        assert admin.put("/v1/kv/ttl:k", content=b"1", params={"ttl": "1"}).status_code == 201
        assert admin.put("/v1/kv/ttl:gone", content=b"2").status_code == 201
        assert admin.delete("/v1/kv/ttl:gone").status_code == 204
    set_k, set_gone, deleted, expired = watch.events(4)  # the expirer runs every 100 ms
    watch.close()
    assert (set_k["type"], set_k["expires_at"] is not None) == ("set", True)
    assert (set_gone["key"], deleted["type"], deleted["key"]) == ("ttl:gone", "del", "ttl:gone")
    assert (expired["type"], expired["key"], expired["value_base64"]) == ("expire", "ttl:k", None)
    assert expired["version"] > set_k["version"]


def test_an_idle_watcher_hears_progress(node: NodeProcess) -> None:
    watch = Watch(_client(node), {"prefix": "x"})
    progress = watch.lines.get(timeout=WAIT_S)
    watch.close()
    assert progress["type"] == "progress" and "/" in progress["lsn"]


def test_a_watcher_sees_no_event_for_a_key_it_may_not_read(node: NodeProcess) -> None:
    with node.client() as admin:
        role = {"name": "app-reader", "grants": [{"actions": ["read"], "pattern": "app:*"}]}
        assert admin.post("/v1/admin/roles", json=role).status_code == 201
        user = {"name": "reader", "password": "reader-password-1", "roles": ["app-reader"]}
        assert admin.post("/v1/admin/users", json=user).status_code == 201
    token = login_token(node, "reader", "reader-password-1")
    with _client(node, token) as reader:
        refused = reader.get("/v1/watch", params={"prefix": "secret:"})
        assert refused.status_code == 403
    watch = Watch(_client(node, token), {"prefix": ""})
    assert watch.status == 200
    with node.client() as admin:
        assert admin.put("/v1/kv/secret:x", content=b"s").status_code == 201
        assert admin.put("/v1/kv/app:y", content=b"a").status_code == 201
    (event,) = watch.events(1)
    watch.close()
    assert event["key"] == "app:y"


def test_from_an_lsn_the_wal_no_longer_holds_is_410_compacted(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env={"KVSTORE_WAL_SEGMENT_SIZE_BYTES": "65536"}).start()
    with node.client() as admin:
        for start in range(0, 2000, 500):
            ops = [{"op": "set", "key": f"k{n}", "value": "v" * 100} for n in range(start, start + 500)]
            assert admin.post("/v1/txn", json={"ops": ops}).status_code == 200
        assert admin.post("/v1/admin/checkpoint").status_code == 200
        oldest = admin.get("/v1/admin/wal").json()["segments"][0]["start_lsn"]
        assert oldest != "0/0"
        gone = admin.get("/v1/watch", params={"from_lsn": "0/0"})
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "compacted" and gone.json()["error"]["oldest_lsn"] == oldest


def test_watchers_beyond_the_cap_get_429(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env={"KVSTORE_MAX_WATCHERS": "1"}).start()
    first = Watch(_client(node), {})
    assert first.status == 200
    assert first.lines.get(timeout=WAIT_S)["type"] == "progress"  # streaming: counted
    with node.client() as admin:
        assert admin.get("/v1/watch").status_code == 429
        assert "\nkvstore_watchers 1.0\n" in admin.get("/metrics").text
    first.close()
    with node.client() as admin:

        def second_watch_admitted() -> bool:
            with admin.stream("GET", "/v1/watch") as response:
                return response.status_code == 200

        wait_until(second_watch_admitted, WAIT_S, "the first watcher's slot to free")
