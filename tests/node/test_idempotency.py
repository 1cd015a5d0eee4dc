"""Idempotency-Key on the writes: a retry gets the first answer and writes nothing, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.harness import NodeProcess
from support.rawhttp import connect, request_head
from support.sessions import session
from support.waiting import wait_until

PASSWORD = "idempotency-test-password"
REPLAYED = "idempotent-replayed"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(Path(tmp_path_factory.mktemp("idempotency")) / "node")
    node.start()
    yield node
    node.close()


@pytest.fixture(scope="module")
def admin(node: NodeProcess) -> Iterator[httpx.Client]:
    with node.client() as client:
        yield client


def _key() -> str:
    return str(uuid.uuid4())


def _value(client: httpx.Client, key: str) -> bytes:
    response = client.get(f"/v1/kv/{key}")
    assert response.status_code == 200, response.text
    return response.content


def _same_answer(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.content == first.content  # the body byte for byte, its commit_lsn included
    for header in ("etag", "x-kv-commit-lsn", "x-kv-timeline", "content-type"):
        assert again.headers.get(header) == first.headers.get(header), header
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"


def test_incr_retried_with_the_same_key_counts_once(admin: httpx.Client) -> None:
    counter, idem = f"idem:incr:{_key()}", {"idempotency-key": _key()}
    first = admin.post(f"/v1/kv/{counter}/incr?by=5", headers=idem)
    assert first.status_code == 200, first.text
    assert first.json()["value"] == 5
    again = admin.post(f"/v1/kv/{counter}/incr?by=5", headers=idem)
    _same_answer(first, again)
    assert _value(admin, counter) == b"5"
    # Another key is another request: it counts.
    third = admin.post(f"/v1/kv/{counter}/incr?by=5", headers={"idempotency-key": _key()})
    assert third.json()["value"] == 10 and REPLAYED not in third.headers


def test_concurrent_requests_with_one_key_execute_once(node: NodeProcess, admin: httpx.Client) -> None:
    """Sent together: one executes, the others get its answer (those that arrive while it is
    logged but not committed wait for its commit: tests/unit/test_idempotency_answers.py)."""
    counter, idem = f"idem:together:{_key()}", {"idempotency-key": _key()}

    async def send() -> list[httpx.Response]:
        async with node.async_client() as client:
            return await asyncio.gather(*(client.post(f"/v1/kv/{counter}/incr", headers=idem) for _ in range(20)))

    responses = asyncio.run(send())
    assert [response.status_code for response in responses] == [200] * 20
    assert len({response.content for response in responses}) == 1
    assert sum(REPLAYED not in response.headers for response in responses) == 1
    assert _value(admin, counter) == b"1"


def test_put_and_delete_retried_with_the_same_key_write_once(admin: httpx.Client) -> None:
    key, idem = f"idem:put:{_key()}", {"idempotency-key": _key()}
    first = admin.put(f"/v1/kv/{key}?ttl=3600", content=b"one", headers=idem)
    assert first.status_code == 201, first.text
    admin.put(f"/v1/kv/{key}", content=b"two")  # someone else writes meanwhile
    again = admin.put(f"/v1/kv/{key}?ttl=3600", content=b"one", headers=idem)
    _same_answer(first, again)  # still the first answer (201, the first version)
    assert _value(admin, key) == b"two"  # and the retry did not write over the other write

    delete_idem = {"idempotency-key": _key()}
    deleted = admin.delete(f"/v1/kv/{key}", headers=delete_idem)
    assert deleted.status_code == 204
    _same_answer(deleted, admin.delete(f"/v1/kv/{key}", headers=delete_idem))  # not a 404
    assert admin.get(f"/v1/kv/{key}").status_code == 404


def test_txn_retried_with_the_same_key_applies_once(admin: httpx.Client) -> None:
    counter, log = f"idem:txn:{_key()}", f"idem:txn-log:{_key()}"
    admin.put(f"/v1/kv/{counter}", content=b"0")
    version = int(admin.get(f"/v1/kv/{counter}").headers["etag"].strip('"'))
    body = {
        "ops": [
            {"op": "set", "key": counter, "value": "1", "if_version": version},
            {"op": "set", "key": log, "value": "moved"},
        ]
    }
    idem = {"idempotency-key": _key()}
    first = admin.post("/v1/txn", json=body, headers=idem)
    assert first.status_code == 200, first.text
    # A retry without the key fails its precondition: the write happened. With it: the first answer.
    assert admin.post("/v1/txn", json=body).status_code == 412
    _same_answer(first, admin.post("/v1/txn", json=body, headers=idem))


def test_the_same_key_for_a_different_request_is_refused(admin: httpx.Client) -> None:
    counter, idem = f"idem:reuse:{_key()}", {"idempotency-key": _key()}
    assert admin.post(f"/v1/kv/{counter}/incr", headers=idem).status_code == 200
    for method, path, kwargs in [
        ("POST", f"/v1/kv/{counter}/incr?by=2", {}),  # another query
        ("POST", f"/v1/kv/{counter}x/incr", {}),  # another key
        ("PUT", f"/v1/kv/{counter}", {"content": b"7"}),  # another method
    ]:
        response = admin.request(method, path, headers=idem, **kwargs)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "idempotency_key_reused"
        assert "different request" in error["message"] and f"POST /v1/kv/{counter}/incr" in error["message"]
    assert _value(admin, counter) == b"1"


def test_a_refused_write_is_not_remembered(admin: httpx.Client) -> None:
    key, idem = f"idem:refused:{_key()}", {"idempotency-key": _key()}
    admin.put(f"/v1/kv/{key}", content=b"text")
    refused = admin.post(f"/v1/kv/{key}/incr", headers=idem)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_an_integer"
    admin.put(f"/v1/kv/{key}", content=b"41")
    retried = admin.post(f"/v1/kv/{key}/incr", headers=idem)  # executes: nothing was written before
    assert retried.status_code == 200 and retried.json()["value"] == 42
    assert REPLAYED not in retried.headers


def test_another_user_with_the_same_key_is_independent(node: NodeProcess, admin: httpx.Client) -> None:
    created = admin.post("/v1/admin/users", json={"name": "idem-writer", "password": PASSWORD, "roles": ["writer"]})
    assert created.status_code == 201, created.text
    counter, idem = f"idem:users:{_key()}", {"idempotency-key": _key()}
    assert admin.post(f"/v1/kv/{counter}/incr", headers=idem).json()["value"] == 1
    with session(node, "idem-writer", PASSWORD) as writer:
        theirs = writer.post(f"/v1/kv/{counter}/incr", headers=idem)
        assert theirs.status_code == 200 and theirs.json()["value"] == 2
        assert REPLAYED not in theirs.headers
        # The remembered answers are system keys: a user reads neither theirs nor another's.
        assert writer.get("/v1/kv?prefix=_sys.idempotency:").status_code == 403
    assert _value(admin, counter) == b"2"


def _remembered(client: httpx.Client) -> list[str]:
    listing = client.get("/v1/kv", params={"prefix": "_sys.idempotency:", "limit": 10000})
    assert listing.status_code == 200, listing.text
    return [item["key"] for item in listing.json()["keys"]]


def test_without_the_header_every_request_executes_and_nothing_is_remembered(admin: httpx.Client) -> None:
    counter, before = f"idem:plain:{_key()}", _remembered(admin)
    for expected in (1, 2):
        response = admin.post(f"/v1/kv/{counter}/incr")
        assert response.json()["value"] == expected and REPLAYED not in response.headers
    assert _remembered(admin) == before
    key = _key()
    admin.post(f"/v1/kv/{counter}/incr", headers={"idempotency-key": key})
    assert f"_sys.idempotency:admin:{key}" in _remembered(admin)  # what the header adds: one key


@pytest.mark.parametrize(
    "raw",
    ["", "x" * 129, "caf\u00e9"],
    ids=["empty", "too-long", "not-ascii"],
)
def test_a_bad_key_is_a_400_that_says_what_a_key_is(admin: httpx.Client, raw: str) -> None:
    response = admin.post("/v1/kv/idem:bad/incr", headers={"idempotency-key": raw.encode()})  # type: ignore[dict-item]
    assert response.status_code == 400, response.text
    assert "1-128 visible ASCII" in response.json()["error"]["message"]


def test_catalog_writes_refuse_the_header_and_the_answers_cannot_be_forged(admin: httpx.Client) -> None:
    idem = {"idempotency-key": _key()}
    response = admin.put("/v1/kv/_sys.roles:idem-role", json={"name": "idem-role"}, headers=idem)
    assert response.status_code == 400 and "If-Match" in response.json()["error"]["message"]
    forged: dict[str, Any] = {"method": "POST", "path": "/v1/kv/x/incr", "fingerprint": "0" * 64, "status": 200}
    response = admin.put("/v1/kv/_sys.idempotency:admin:forged", json=forged)
    assert response.status_code == 400 and "the node writes these" in response.json()["error"]["message"]


def test_a_superuser_can_read_and_forget_an_answer(admin: httpx.Client) -> None:
    counter, key = f"idem:forget:{_key()}", _key()
    first = admin.post(f"/v1/kv/{counter}/incr", headers={"idempotency-key": key})
    stored = admin.get(f"/v1/kv/_sys.idempotency:admin:{key}")
    assert stored.status_code == 200
    document = stored.json()
    assert document["status"] == 200 and document["body"]["value"] == 1 and document["path"] == f"/v1/kv/{counter}/incr"
    assert int(document["commit_lsn"], 16) > 0 and first.json()["commit_lsn"]
    assert admin.get("/v1/status").json()["catalog"]["damaged"] == 0  # a valid document, never reported
    assert admin.delete(f"/v1/kv/_sys.idempotency:admin:{key}").status_code == 204
    again = admin.post(f"/v1/kv/{counter}/incr", headers={"idempotency-key": key})  # forgotten: executes
    assert again.json()["value"] == 2 and REPLAYED not in again.headers


def test_a_transaction_with_catalog_ops_takes_the_key(admin: httpx.Client) -> None:
    role = f"idem-role-{uuid.uuid4().hex[:8]}"
    document = {"name": role, "superuser": False, "grants": [{"actions": ["read"], "pattern": "idem:*"}]}
    body = {"ops": [{"op": "set", "key": f"_sys.roles:{role}", "value": json.dumps(document), "if_absent": True}]}
    idem = {"idempotency-key": _key()}
    first = admin.post("/v1/txn", json=body, headers=idem)
    assert first.status_code == 200, first.text
    _same_answer(first, admin.post("/v1/txn", json=body, headers=idem))  # not a 412: the role exists


def test_an_incr_retried_after_a_dropped_connection_counts_once(node: NodeProcess, admin: httpx.Client) -> None:
    counter, key = f"idem:dropped:{_key()}", _key()
    headers = {"authorization": f"Bearer {node.token()}", "idempotency-key": key, "content-length": "0"}
    # Sent, executed, then the connection dropped with the answer unread. (Closed at once
    # instead, the node may see the close first and never run it: nothing to retry then.)
    with connect(node.port) as sock:
        sock.sendall(request_head("POST", f"/v1/kv/{counter}/incr", headers))
        wait_until(lambda: _value(admin, counter) == b"1", what="the dropped request's INCR")
    retried = admin.post(f"/v1/kv/{counter}/incr", headers={"idempotency-key": key})
    assert retried.status_code == 200 and retried.json()["value"] == 1
    assert retried.headers[REPLAYED] == "true"
    assert _value(admin, counter) == b"1"


def test_the_answer_survives_sigkill_and_restart(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()
    counter, idem = "idem:crash", {"idempotency-key": _key()}
    with node.client() as client:
        first = client.post(f"/v1/kv/{counter}/incr?by=3", headers=idem)
        assert first.status_code == 200
    node.kill()
    node.restart()
    with node.client() as client:
        _same_answer(first, client.post(f"/v1/kv/{counter}/incr?by=3", headers=idem))
        assert _value(client, counter) == b"3"


def test_the_answer_is_forgotten_after_idempotency_ttl_s(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env={"KVSTORE_IDEMPOTENCY_TTL_S": "1"}).start()
    counter, idem = "idem:ttl", {"idempotency-key": _key()}
    with node.client() as client:
        assert client.post(f"/v1/kv/{counter}/incr", headers=idem).json()["value"] == 1

        wait_until(lambda: _remembered(client) == [], what="the expirer to remove the remembered answer")
        again = client.post(f"/v1/kv/{counter}/incr", headers=idem)
        assert again.json()["value"] == 2 and REPLAYED not in again.headers
