"""The HTTP API over real sockets against real `kvstored` processes.

Two nodes serve most tests, one per module (starting a node costs seconds):

* `api_node` has small limits (keys, values, bodies, transactions, scan pages) and a
  fast expirer (50 ms), so every limit and the background expiry are cheap to reach;
* `strict_node` admits only 2 requests in flight and practically never runs the
  expirer, so 429s are easy to provoke and lazy expiry is observed on its own.

Tests are independent of their order: each works under its own key prefix (`uid`).
Tests that stop a node start their own with `node_factory`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import quote

import httpx
import jwt
import pytest

from support.harness import ADMIN_PASSWORD, NodeProcess
from support.tokens import signing_secret

MAX_KEY_BYTES = 64
MAX_VALUE_BYTES = 1024
MAX_BODY_BYTES = 4096
MAX_TXN_OPS = 5
MAX_SCAN_LIMIT = 10
INT64_MAX = 2**63 - 1

API_ENV = {
    "KVSTORE_MAX_KEY_BYTES": str(MAX_KEY_BYTES),
    "KVSTORE_MAX_VALUE_BYTES": str(MAX_VALUE_BYTES),
    "KVSTORE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "KVSTORE_MAX_TXN_OPS": str(MAX_TXN_OPS),
    "KVSTORE_MAX_SCAN_LIMIT": str(MAX_SCAN_LIMIT),
    "KVSTORE_EXPIRE_INTERVAL_MS": "50",
}
STRICT_ENV = {
    "KVSTORE_MAX_REQUESTS_IN_FLIGHT": "2",
    "KVSTORE_EXPIRE_INTERVAL_MS": str(3_600_000),  # the expirer never runs during a test
}


def _module_node(tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp(name) / "node", env=env)
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture(scope="module")
def api_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    yield from _module_node(tmp_path_factory, "api", API_ENV)


@pytest.fixture(scope="module")
def strict_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    yield from _module_node(tmp_path_factory, "strict", STRICT_ENV)


@pytest.fixture
def client(api_node: NodeProcess) -> Iterator[httpx.Client]:
    with api_node.client() as http:
        yield http


@pytest.fixture
def uid() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}:"


def kv(key: str) -> str:
    """The URL path of a key, percent-encoded (a slash too) as any client would."""
    return "/v1/kv/" + quote(key, safe="")


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    """`response` is `status` with the JSON error body `{"error": {"code", "message"}}`."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def assert_serving(node: NodeProcess) -> None:
    """The process is alive and answers a write and a read."""
    assert node.process is not None and node.process.poll() is None, node.log()[-4000:]
    with node.client() as http:
        key = kv(f"alive:{uuid.uuid4().hex}")
        assert http.put(key, content=b"ok").status_code == 201
        got = http.get(key)
        assert (got.status_code, got.content) == (200, b"ok")


def wal_records(http: httpx.Client) -> list[dict]:
    response = http.get("/v1/admin/wal/records", params={"from_lsn": "0/0", "follow": "false"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def listed_keys(http: httpx.Client, prefix: str, limit: int = MAX_SCAN_LIMIT) -> list[str]:
    response = http.get("/v1/kv", params={"prefix": prefix, "limit": limit})
    assert response.status_code == 200, response.text
    return [item["key"] for item in response.json()["keys"]]


# -- basic CRUD -------------------------------------------------------------------------


def test_put_get_delete_lifecycle(client: httpx.Client, uid: str) -> None:
    path = kv(uid + "k")
    created = client.put(path, content=b"v1")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"] == uid + "k"
    v1 = body["version"]
    assert created.headers["etag"] == f'"{v1}"'
    assert created.headers["x-kv-commit-lsn"] == body["commit_lsn"]
    assert created.headers["x-kv-timeline"] == str(body["timeline"]) == "1"

    got = client.get(path)
    assert got.status_code == 200
    assert got.content == b"v1"
    assert got.headers["etag"] == f'"{v1}"'
    assert got.headers["content-type"] == "application/octet-stream"
    assert "x-kv-expires-at" not in got.headers

    updated = client.put(path, content=b"\x00\xffbinary")
    assert updated.status_code == 200, updated.text
    v2 = updated.json()["version"]
    assert v2 > v1
    got = client.get(path)
    assert (got.content, got.headers["etag"]) == (b"\x00\xffbinary", f'"{v2}"')

    empty = client.put(path, content=b"")  # an empty value is a value
    assert empty.status_code == 200
    assert empty.json()["version"] > v2
    assert client.get(path).content == b""

    deleted = client.delete(path)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(client.get(path), 404, "not_found")
    assert_error(client.delete(path), 404, "not_found")
    recreated = client.put(path, content=b"again")
    assert recreated.status_code == 201
    assert recreated.json()["version"] > v2


@pytest.mark.parametrize(
    "key",
    ["with space", "a/b", "a/b/c/", "ключ-ünïcødé-🔑", "q?x=1&y=2#frag", "50%off", "plus+sign", "a%41", "%2F"],
    ids=["space", "slash", "slashes", "unicode", "query-chars", "percent", "plus", "percent-hex", "encoded-slash"],
)
def test_keys_needing_percent_encoding_round_trip(client: httpx.Client, uid: str, key: str) -> None:
    full = uid + key
    created = client.put(kv(full), content=full.encode())
    assert created.status_code == 201, created.text
    assert created.json()["key"] == full
    got = client.get(kv(full))
    assert got.status_code == 200, got.text
    assert got.content == full.encode()
    assert listed_keys(client, uid) == [full]
    assert client.delete(kv(full)).status_code == 204


def test_empty_key_is_400(client: httpx.Client) -> None:
    for method in ("GET", "PUT", "DELETE"):
        assert_error(client.request(method, "/v1/kv/", content=b"x" if method == "PUT" else None), 400, "bad_request")


# -- compare-and-set ----------------------------------------------------------------------


def test_if_match_compare_and_set(client: httpx.Client, uid: str) -> None:
    path = kv(uid + "cas")
    v1 = client.put(path, content=b"a").json()["version"]
    v2_response = client.put(path, content=b"b", headers={"if-match": f'"{v1}"'})
    assert v2_response.status_code == 200, v2_response.text
    v2 = v2_response.json()["version"]
    assert v2 > v1

    stale = client.put(path, content=b"c", headers={"if-match": f'"{v1}"'})
    assert_error(stale, 412, "precondition_failed")
    got = client.get(path)
    assert (got.content, got.headers["etag"]) == (b"b", f'"{v2}"')

    # If-Match on a key that does not exist fails too, and creates nothing.
    assert_error(client.put(kv(uid + "absent"), content=b"x", headers={"if-match": '"1"'}), 412, "precondition_failed")
    assert_error(client.get(kv(uid + "absent")), 404, "not_found")
    # An If-Match that is not a version is a bad request, not a silent mismatch.
    assert_error(client.put(path, content=b"c", headers={"if-match": "banana"}), 400, "bad_request")


def test_if_none_match_star_creates_once(client: httpx.Client, uid: str) -> None:
    path = kv(uid + "once")
    first = client.put(path, content=b"first", headers={"if-none-match": "*"})
    assert first.status_code == 201, first.text
    second = client.put(path, content=b"second", headers={"if-none-match": "*"})
    assert_error(second, 412, "precondition_failed")
    assert client.get(path).content == b"first"


def test_delete_with_if_match(client: httpx.Client, uid: str) -> None:
    path = kv(uid + "d")
    v1 = client.put(path, content=b"a").json()["version"]
    v2 = client.put(path, content=b"b").json()["version"]
    assert_error(client.delete(path, headers={"if-match": f'"{v1}"'}), 412, "precondition_failed")
    assert client.get(path).content == b"b"
    assert client.delete(path, headers={"if-match": f'"{v2}"'}).status_code == 204
    assert_error(client.get(path), 404, "not_found")


def test_get_if_none_match_etag_is_304(client: httpx.Client, uid: str) -> None:
    path = kv(uid + "cached")
    version = client.put(path, content=b"a").json()["version"]
    etag = f'"{version}"'
    not_modified = client.get(path, headers={"if-none-match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    changed = client.get(path, headers={"if-none-match": f'"{version - 1}"'})
    assert (changed.status_code, changed.content) == (200, b"a")


# -- INCR -------------------------------------------------------------------------------


def test_concurrent_incr_is_serializable(api_node: NodeProcess, uid: str) -> None:
    tasks_count, increments_each = 20, 25
    path = kv(uid + "counter") + "/incr"

    async def worker(http: httpx.AsyncClient) -> list[tuple[int, int]]:
        seen = []
        for _ in range(increments_each):
            response = await http.post(path)
            assert response.status_code == 200, response.text
            body = response.json()
            seen.append((body["value"], body["version"]))
        return seen

    async def run() -> list[tuple[int, int]]:
        limits = httpx.Limits(max_connections=tasks_count, max_keepalive_connections=tasks_count)
        async with api_node.async_client(limits=limits) as http:
            results = await asyncio.gather(*(worker(http) for _ in range(tasks_count)))
        return [item for seen in results for item in seen]

    results = asyncio.run(run())
    total = tasks_count * increments_each
    values = [value for value, _ in results]
    assert sorted(values) == list(range(1, total + 1))  # every value distinct, none lost
    assert len({version for _, version in results}) == total
    with api_node.client() as http:
        got = http.get(kv(uid + "counter"))
        assert got.content == str(total).encode()
        assert got.headers["etag"] == f'"{max(version for _, version in results)}"'


def test_incr_by_and_errors(client: httpx.Client, uid: str) -> None:
    path = kv(uid + "n")
    first = client.post(path + "/incr")
    assert first.status_code == 200, first.text
    assert first.json()["value"] == 1
    assert first.headers["etag"] == f'"{first.json()["version"]}"'
    assert client.post(path + "/incr", params={"by": -5}).json()["value"] == -4
    assert client.get(path).content == b"-4"

    text = kv(uid + "text")
    client.put(text, content=b"not a number")
    assert_error(client.post(text + "/incr"), 409, "not_an_integer")
    assert client.get(text).content == b"not a number"

    big = kv(uid + "big")
    client.put(big, content=str(INT64_MAX - 1).encode())
    assert client.post(big + "/incr").json()["value"] == INT64_MAX
    assert_error(client.post(big + "/incr"), 409, "not_an_integer")
    assert client.get(big).content == str(INT64_MAX).encode()

    small = kv(uid + "small")
    client.put(small, content=str(-(2**63)).encode())
    assert_error(client.post(small + "/incr", params={"by": -1}), 409, "not_an_integer")

    assert_error(client.post(path + "/incr", params={"by": "abc"}), 400, "bad_request")
    assert_error(client.post(path + "/incr", params={"by": str(2**63)}), 400, "bad_request")
    assert client.get(path).content == b"-4"


# -- commit LSNs and visibility ---------------------------------------------------------------


def test_commit_lsn_is_monotonic_and_writes_are_visible_once_acknowledged(client: httpx.Client, uid: str) -> None:
    lsns = []
    for index in range(10):
        path = kv(f"{uid}{index % 3}")
        if index % 4 == 3:
            response = client.post(path + "/incr")
        else:
            response = client.put(path, content=str(index).encode())
        assert response.status_code in (200, 201), response.text
        lsn_text = response.json()["commit_lsn"]
        assert response.headers["x-kv-commit-lsn"] == lsn_text
        lsns.append(parse_lsn(lsn_text))
        # Acknowledged means committed: a read right after sees this version.
        assert client.get(path).headers["etag"] == f'"{response.json()["version"]}"'
    deleted = client.delete(kv(uid + "0"))
    lsns.append(parse_lsn(deleted.headers["x-kv-commit-lsn"]))
    assert lsns == sorted(lsns) and len(set(lsns)) == len(lsns), lsns
    status = client.get("/v1/status").json()
    assert parse_lsn(status["lsn"]["commit_lsn"]) >= lsns[-1]


# -- TTL -------------------------------------------------------------------------------------


def test_ttl_sets_expires_at(client: httpx.Client, uid: str) -> None:
    path = kv(uid + "ttl")
    before = time.time()
    assert client.put(path, params={"ttl": 30}, content=b"v").status_code == 201
    header = client.get(path).headers["x-kv-expires-at"]
    assert header.endswith("Z")
    expires_at = datetime.fromisoformat(header.replace("Z", "+00:00")).timestamp()
    assert before + 29 <= expires_at <= time.time() + 31, (header, before)
    listed = client.get("/v1/kv", params={"prefix": uid}).json()["keys"]
    assert listed[0]["expires_at"] == header
    # A PUT without ttl makes the key permanent again.
    client.put(path, content=b"v")
    assert "x-kv-expires-at" not in client.get(path).headers


def test_lazy_expiry_hides_key_without_expirer(strict_node: NodeProcess, uid: str) -> None:
    """On a node whose expirer does not run, an expired key is 404 and not listed; no DEL is logged."""
    with strict_node.client() as http:
        path = kv(uid + "lazy")
        assert http.put(path, params={"ttl": 1}, content=b"v").status_code == 201
        assert "x-kv-expires-at" in http.get(path).headers
        time.sleep(1.3)
        assert_error(http.get(path), 404, "not_found")
        assert listed_keys(http, uid) == []
        assert_error(http.delete(path), 404, "not_found")
        assert not [r for r in wal_records(http) if r["kind"] == "DEL" and r.get("key") == uid + "lazy"]
        # An expired key can be created again, even with If-None-Match: *.
        assert http.put(path, content=b"new", headers={"if-none-match": "*"}).status_code == 201


def test_background_expiry_logs_del(client: httpx.Client, uid: str) -> None:
    key = uid + "bg"
    put = client.put(kv(key), params={"ttl": 1}, content=b"v")
    assert put.status_code == 201
    version = put.json()["version"]
    assert listed_keys(client, uid) == [key]
    deadline = time.monotonic() + 10
    dels: list[dict] = []
    while time.monotonic() < deadline:
        dels = [r for r in wal_records(client) if r["kind"] == "DEL" and r["key"] == key]
        if dels:
            break
        time.sleep(0.1)
    assert len(dels) == 1, dels
    assert dels[0]["version"] > version
    assert listed_keys(client, uid) == []
    assert_error(client.get(kv(key)), 404, "not_found")


@pytest.mark.parametrize("ttl", ["0", "-1", "abc", "1.5", str(10**12)])
def test_bad_ttl_is_400(client: httpx.Client, uid: str, ttl: str) -> None:
    assert_error(client.put(kv(uid + "k"), params={"ttl": ttl}, content=b"v"), 400, "bad_request")
    assert_error(client.get(kv(uid + "k")), 404, "not_found")


# -- listing ---------------------------------------------------------------------------------


def test_listing_paginates_in_order(client: httpx.Client, uid: str) -> None:
    keys = [f"{uid}p:{index:02d}" for index in range(8)]
    for key in reversed(keys):
        assert client.put(kv(key), content=b"x" * len(key)).status_code == 201
    client.put(kv(uid + "q:other"), content=b"not in p:")
    client.put(kv(uid[:-1]), content=b"a prefix of the prefix")

    visited: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"prefix": uid + "p:", "limit": 3}
        if after is not None:
            params["after"] = after
        page = client.get("/v1/kv", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        pages += 1
        assert len(body["keys"]) <= 3
        for item in body["keys"]:
            assert item["value_bytes"] == len(item["key"])
            assert isinstance(item["version"], int)
        visited += [item["key"] for item in body["keys"]]
        after = body["next_after"]
        if after is None:
            break
        assert after == body["keys"][-1]["key"]
        assert pages < 10
    assert visited == keys
    assert pages == 3

    # A page that ends exactly at the last key says there is no more.
    page = client.get("/v1/kv", params={"prefix": uid + "p:", "limit": 4, "after": keys[3]}).json()
    assert [item["key"] for item in page["keys"]] == keys[4:]
    assert page["next_after"] is None


def test_listing_limits(client: httpx.Client, uid: str) -> None:
    assert client.get("/v1/kv", params={"prefix": uid, "limit": MAX_SCAN_LIMIT}).status_code == 200
    assert_error(client.get("/v1/kv", params={"prefix": uid, "limit": MAX_SCAN_LIMIT + 1}), 400, "bad_request")
    assert_error(client.get("/v1/kv", params={"prefix": uid, "limit": 0}), 400, "bad_request")
    assert_error(client.get("/v1/kv", params={"prefix": uid, "limit": "ten"}), 400, "bad_request")


# -- transactions -------------------------------------------------------------------------------


def test_txn_applies_all_ops_with_one_version(client: httpx.Client, uid: str) -> None:
    checked = client.put(kv(uid + "checked"), content=b"c").json()["version"]
    client.put(kv(uid + "doomed"), content=b"d")
    ops = [
        {"op": "set", "key": uid + "a", "value": "text ü"},
        {"op": "del", "key": uid + "doomed"},
        {"op": "check", "key": uid + "checked", "if_version": checked},
        {"op": "set", "key": uid + "b", "value_base64": base64.b64encode(b"\x00\x01\xff").decode(), "if_absent": True},
    ]
    response = client.post("/v1/txn", json={"ops": ops})
    assert response.status_code == 200, response.text
    body = response.json()
    version = body["version"]
    assert response.headers["x-kv-commit-lsn"] == body["commit_lsn"]
    assert body["results"] == [
        {"op": "set", "key": uid + "a", "version": version},
        {"op": "del", "key": uid + "doomed", "deleted": True},
        {"op": "check", "key": uid + "checked", "version": checked},
        {"op": "set", "key": uid + "b", "version": version},
    ]
    a, b = client.get(kv(uid + "a")), client.get(kv(uid + "b"))
    assert (a.content, a.headers["etag"]) == ("text ü".encode(), f'"{version}"')
    assert (b.content, b.headers["etag"]) == (b"\x00\x01\xff", f'"{version}"')
    assert_error(client.get(kv(uid + "doomed")), 404, "not_found")
    # One WAL record carries the whole transaction.
    txns = [r for r in wal_records(client) if r["kind"] == "TXN" and any(op.get("key") == uid + "a" for op in r["ops"])]
    assert len(txns) == 1
    assert sorted(op["key"] for op in txns[0]["ops"]) == sorted([uid + "a", uid + "doomed", uid + "b"])


def test_txn_failing_last_precondition_applies_nothing(client: httpx.Client, uid: str) -> None:
    client.put(kv(uid + "kept"), content=b"kept")
    client.put(kv(uid + "exists"), content=b"exists")
    ops = [
        {"op": "set", "key": uid + "new", "value": "x"},
        {"op": "del", "key": uid + "kept"},
        {"op": "set", "key": uid + "kept2", "value": "y"},
        {"op": "set", "key": uid + "exists", "value": "z", "if_absent": True},
    ]
    error = assert_error(client.post("/v1/txn", json={"ops": ops}), 412, "precondition_failed")
    assert "op 3" in error["message"]
    assert_error(client.get(kv(uid + "new")), 404, "not_found")
    assert_error(client.get(kv(uid + "kept2")), 404, "not_found")
    assert client.get(kv(uid + "kept")).content == b"kept"
    assert client.get(kv(uid + "exists")).content == b"exists"
    stale = [{"op": "set", "key": uid + "new", "value": "x"}, {"op": "check", "key": uid + "kept", "if_version": 1}]
    assert_error(client.post("/v1/txn", json={"ops": stale}), 412, "precondition_failed")
    assert_error(client.get(kv(uid + "new")), 404, "not_found")
    assert listed_keys(client, uid) == [uid + "exists", uid + "kept"]


def test_txn_too_many_ops_is_413(client: httpx.Client, uid: str) -> None:
    ops = [{"op": "set", "key": f"{uid}{index}", "value": "x"} for index in range(MAX_TXN_OPS + 1)]
    assert_error(client.post("/v1/txn", json={"ops": ops}), 413, "payload_too_large")
    assert listed_keys(client, uid) == []
    ok = client.post("/v1/txn", json={"ops": ops[:MAX_TXN_OPS]})
    assert ok.status_code == 200, ok.text
    assert len(listed_keys(client, uid)) == MAX_TXN_OPS


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[]",
        b'{"ops": "set"}',
        b"{}",
        b'{"ops": []}',
        b'{"ops": [42]}',
        b'{"ops": [{"op": "upsert", "key": "K", "value": "x"}]}',
        b'{"ops": [{"op": "set", "key": "K"}]}',
        b'{"ops": [{"op": "set", "key": 7, "value": "x"}]}',
        b'{"ops": [{"op": "set", "key": "", "value": "x"}]}',
        b'{"ops": [{"op": "set", "key": "K", "value_base64": "not base64!"}]}',
        b'{"ops": [{"op": "set", "key": "K", "value": "x", "if_version": "3"}]}',
        b'{"ops": [{"op": "set", "key": "K", "value": "x", "if_absent": "yes"}]}',
        b'{"ops": [{"op": "set", "key": "K", "value": "x", "ttl": 0}]}',
        b'{"ops": [{"op": "set", "key": "K", "value": "x"}, {"op": "set", "key": "K2", "valu": "x"}]}',
    ],
)
def test_txn_malformed_is_400(client: httpx.Client, uid: str, body: bytes) -> None:
    body = body.replace(b'"K', f'"{uid}K'.encode())
    response = client.post("/v1/txn", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_request")
    assert listed_keys(client, uid) == []


# -- limits -------------------------------------------------------------------------------------


def test_key_length_limit(client: httpx.Client) -> None:
    fits = "k" * MAX_KEY_BYTES
    assert client.put(kv(fits), content=b"v").status_code in (200, 201)
    assert_error(client.put(kv(fits + "k"), content=b"v"), 400, "bad_request")
    assert_error(client.get(kv(fits + "k")), 400, "bad_request")
    # The limit counts UTF-8 bytes, not characters.
    assert_error(client.put(kv("é" * (MAX_KEY_BYTES // 2 + 1)), content=b"v"), 400, "bad_request")
    assert_error(client.post(kv(fits + "k") + "/incr"), 400, "bad_request")
    txn = {"ops": [{"op": "set", "key": fits + "k", "value": "v"}]}
    assert_error(client.post("/v1/txn", json=txn), 400, "bad_request")


def test_value_size_limit(api_node: NodeProcess, client: httpx.Client, uid: str) -> None:
    path = kv(uid + "v")
    assert client.put(path, content=b"x" * MAX_VALUE_BYTES).status_code == 201
    error = assert_error(client.put(path, content=b"y" * (MAX_VALUE_BYTES + 1)), 413, "payload_too_large")
    assert str(MAX_VALUE_BYTES) in error["message"]
    assert_error(client.put(path, content=b"y" * (10 * 1024 * 1024)), 413, "payload_too_large")

    def chunks(total: int, size: int = 100) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            yield b"z" * min(size, total - sent)
            sent += size

    # No Content-Length (a chunked body): refused before reading, so a cut-off upload
    # can never be stored as if it were whole.
    assert_error(client.put(path, content=chunks(MAX_VALUE_BYTES + 1)), 411, "length_required")
    assert_error(client.put(path, content=chunks(10)), 411, "length_required")
    assert client.get(path).content == b"x" * MAX_VALUE_BYTES

    big = base64.b64encode(b"b" * (MAX_VALUE_BYTES + 1)).decode()
    txn = {"ops": [{"op": "set", "key": uid + "t", "value_base64": big}]}
    assert_error(client.post("/v1/txn", json=txn), 413, "payload_too_large")
    assert_serving(api_node)


def test_body_size_limit(api_node: NodeProcess, client: httpx.Client, uid: str) -> None:
    padding = "p" * MAX_BODY_BYTES
    body = json.dumps({"ops": [{"op": "set", "key": uid + "k", "value": "x"}], "padding": padding}).encode()
    assert len(body) > MAX_BODY_BYTES
    headers = {"content-type": "application/json"}
    assert_error(client.post("/v1/txn", content=body, headers=headers), 413, "payload_too_large")
    chunked = iter([body[:1000], body[1000:]])  # no Content-Length
    unread = client.post("/v1/txn", content=chunked, headers=headers)
    assert_error(unread, 411, "length_required")
    # Its body was never read: the connection cannot be reused, and the client is told so
    # (reusing it raced the server's close: "Server disconnected" on the next request).
    assert unread.headers["connection"] == "close"
    login = json.dumps({"username": "admin", "password": "p" * MAX_BODY_BYTES}).encode()
    assert_error(client.post("/v1/auth/login", content=login, headers=headers), 413, "payload_too_large")
    assert_error(client.get(kv(uid + "k")), 404, "not_found")
    assert_serving(api_node)


def test_requests_in_flight_limit(strict_node: NodeProcess, uid: str) -> None:
    concurrent = 50

    async def burst(round_: int) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=concurrent, max_keepalive_connections=concurrent)
        async with strict_node.async_client(limits=limits) as http:
            return await asyncio.gather(
                *(http.put(kv(f"{uid}{round_}:{index}"), content=b"v") for index in range(concurrent))
            )

    rejected = 0
    for round_ in range(5):  # nearly always the first round; retry in case the loop kept up
        responses = asyncio.run(burst(round_))
        for response in responses:
            if response.status_code == 429:
                assert_error(response, 429, "too_many_requests")
                rejected += 1
            else:
                assert response.status_code == 201, response.text
        if rejected:
            break
    assert rejected >= 1
    # Every rejected request released its slot: sequential requests all pass.
    with strict_node.client() as http:
        for index in range(10):
            assert http.put(kv(f"{uid}after:{index}"), content=b"v").status_code == 201
        metrics = http.get("/metrics").text
    assert 'kvstore_http_rejected_total{reason="in_flight_limit"}' in metrics
    assert_serving(strict_node)


def test_unknown_route_and_wrong_method(client: httpx.Client) -> None:
    assert_error(client.get("/v1/nope"), 404, "not_found")
    assert_error(client.get("/"), 404, "not_found")
    assert_error(client.get("/v1/kvx"), 404, "not_found")
    assert_error(client.delete("/v1/status"), 405, "method_not_allowed")
    assert_error(client.get("/v1/txn"), 405, "method_not_allowed")
    assert_error(client.get("/v1/auth/login"), 405, "method_not_allowed")
    assert_error(client.get("/v1/admin/checkpoint"), 405, "method_not_allowed")
    assert_error(client.patch("/v1/kv/x", content=b"v"), 405, "method_not_allowed")
    assert_error(client.post("/v1/kv/x", content=b"v"), 405, "method_not_allowed")


# -- authentication ---------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/v1/kv/x"),
    ("PUT", "/v1/kv/x"),
    ("DELETE", "/v1/kv/x"),
    ("POST", "/v1/kv/x/incr"),
    ("GET", "/v1/kv"),
    ("POST", "/v1/txn"),
    ("GET", "/v1/status"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/admin/checkpoint"),
    ("GET", "/v1/admin/wal/records"),
]


def _forged(claims: dict, secret: str, kid: str, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm, headers={"kid": kid})


def test_requests_without_valid_credentials_are_401(api_node: NodeProcess) -> None:
    good = api_node.token()
    kid = jwt.get_unverified_header(good)["kid"]
    claims = jwt.decode(good, options={"verify_signature": False})
    now = int(time.time())
    secret = signing_secret(api_node, kid)
    bad_headers = {
        "none": {},
        "empty": {"authorization": ""},
        "garbage bearer": {"authorization": "Bearer garbage"},
        "bearer without token": {"authorization": "Bearer"},
        "basic": {"authorization": "Basic YWRtaW46dGVzdA=="},
        "token without scheme": {"authorization": good},
        "wrong secret": {"authorization": "Bearer " + _forged(claims, "w" * 64, kid)},
        "unknown kid": {"authorization": "Bearer " + _forged(claims, secret, "0000000000000000")},
        "expired": {
            "authorization": "Bearer " + _forged({**claims, "iat": now - 7200, "exp": now - 3600}, secret, kid)
        },
        "wrong generation": {"authorization": "Bearer " + _forged({**claims, "gen": claims["gen"] + 1}, secret, kid)},
        "unknown user": {"authorization": "Bearer " + _forged({**claims, "sub": "nobody"}, secret, kid)},
        "alg none": {"authorization": "Bearer " + jwt.encode(claims, None, algorithm="none", headers={"kid": kid})},
        "tampered": {"authorization": "Bearer " + good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")},
    }
    with httpx.Client(base_url=api_node.url, timeout=30) as anonymous:
        for method, path in PROTECTED:
            for name, headers in bad_headers.items():
                body = b'{"ops": [{"op": "set", "key": "x", "value": "y"}]}' if method in ("PUT", "POST") else None
                response = anonymous.request(method, path, headers=headers, content=body)
                assert response.status_code == 401, (method, path, name, response.text)
                assert_error(response, 401, "unauthorized")
        # A correctly signed token for the real user is accepted (so the above failed for the right reason).
        ok = anonymous.get("/v1/status", headers={"authorization": "Bearer " + _forged(claims, secret, kid)})
        assert ok.status_code == 200, ok.text
        assert_error(anonymous.get(kv("x")), 401, "unauthorized")


def test_open_endpoints_need_no_auth(api_node: NodeProcess) -> None:
    with httpx.Client(base_url=api_node.url, timeout=30) as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        assert anonymous.get("/ready").json() == {"status": "ready"}
        metrics = anonymous.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "kvstore_kv_operations_total" in metrics.text


def test_login(api_node: NodeProcess) -> None:
    with httpx.Client(base_url=api_node.url, timeout=30) as anonymous:
        ok = anonymous.post("/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_at"] > time.time()
        assert anonymous.get("/v1/status", headers={"authorization": f"Bearer {body['token']}"}).status_code == 200

        wrong = anonymous.post("/v1/auth/login", json={"username": "admin", "password": "not-the-password"})
        unknown = anonymous.post("/v1/auth/login", json={"username": "no-such-user", "password": "not-the-password"})
        assert_error(wrong, 401, "unauthorized")
        assert_error(unknown, 401, "unauthorized")
        assert wrong.json() == unknown.json()  # no user enumeration

        malformed = [
            b"",
            b"not json",
            b"[]",
            b"{}",
            b'{"username": "admin"}',
            b'{"password": "x"}',
            b'{"username": 1, "password": "x"}',
            b'{"username": "admin", "password": null}',
            b'{"username": "", "password": "x"}',
        ]
        for raw in malformed:
            response = anonymous.post("/v1/auth/login", content=raw, headers={"content-type": "application/json"})
            assert response.status_code == 400, (raw, response.text)
            assert_error(response, 400, "bad_request")


# -- status and docs ------------------------------------------------------------------------------


def test_status(client: httpx.Client, uid: str) -> None:
    write = client.put(kv(uid + "s"), content=b"v").json()
    status = client.get("/v1/status")
    assert status.status_code == 200
    body = status.json()
    assert body["role"] == "primary"
    assert body["state"] == "running"
    assert isinstance(body["timeline"], int) and body["timeline"] >= 1
    names = ("insert_lsn", "write_lsn", "flush_lsn", "commit_lsn", "apply_lsn", "redo_lsn")
    assert set(body["lsn"]) == set(names)
    lsn = {name: parse_lsn(body["lsn"][name]) for name in names}
    assert lsn["commit_lsn"] >= parse_lsn(write["commit_lsn"])
    assert lsn["redo_lsn"] <= lsn["apply_lsn"] <= lsn["commit_lsn"] <= lsn["write_lsn"] <= lsn["insert_lsn"], body[
        "lsn"
    ]
    assert lsn["flush_lsn"] <= lsn["write_lsn"], body["lsn"]


def test_openapi(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert "/v1/kv/{key}" in paths
    assert {"get", "put", "delete"} <= set(paths["/v1/kv/{key}"])
    assert "/v1/txn" in paths
    assert {"get", "put"} <= set(paths["/v1/admin/hba"]) and "/v1/admin/jwt-keys/rotate" in paths


# -- robustness ---------------------------------------------------------------------------------


def _raw_exchange(node: NodeProcess, payload: bytes, *, wait_s: float = 2.0) -> bytes:
    """Send `payload` on a fresh connection; return whatever comes back until close or timeout."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=wait_s) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            return b""  # the server may close before taking it all
        received = b""
        try:
            while len(received) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, OSError):
            pass
        return received


def test_garbage_does_not_crash_the_node(strict_node: NodeProcess) -> None:
    token = strict_node.token().encode()
    auth = b"Authorization: Bearer " + token + b"\r\n"
    junk = [
        b"\x00\xff\xfe garbage \x01\x02\r\n\r\n",
        b"HELLO WORLD\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
        b"GET /" + b"p" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /v1/kv/junk HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"PUT /v1/kv/junk HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"PUT /v1/kv/junk HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        b"PUT /v1/kv/junk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + auth + b"\r\nZZZ\r\nabc\r\n",
        b"GET /v1/kv/%ff%fe HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /v1/kv/a\x00b HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"POST /v1/txn HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n" + auth + b"\r\n\xff\xfe\x00{[}]\x80\x81",
    ]
    for payload in junk:
        reply = _raw_exchange(strict_node, payload)
        if reply:
            status = reply.split(b"\r\n", 1)[0]
            assert not status.startswith(b"HTTP/1.1 5"), (payload[:80], reply[:300])
        assert strict_node.process is not None and strict_node.process.poll() is None, strict_node.log()[-4000:]
    assert_serving(strict_node)
    with strict_node.client() as http:
        assert http.get("/v1/status").json()["state"] == "running"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 100\r\n%AUTH%\r\nonly ten b",
        b"Transfer-Encoding: chunked\r\n%AUTH%\r\n5\r\nabcde\r\n",
        b"Transfer-Encoding: chunked\r\n%AUTH%\r\n5\r\nabcde\r\n3\r\nab",
    ],
    ids=["content-length", "chunked-no-last-chunk", "chunked-mid-chunk"],
)
def test_truncated_body_is_not_stored(strict_node: NodeProcess, uid: str, framing: bytes) -> None:
    """A client that goes away mid-upload must not leave a shortened value behind."""
    key = uid + "half"
    auth = b"Authorization: Bearer " + strict_node.token().encode() + b"\r\n"
    head = b"PUT " + kv(key).encode() + b" HTTP/1.1\r\nHost: x\r\n"
    with socket.create_connection(("127.0.0.1", strict_node.port), timeout=2) as sock:
        sock.sendall(head + framing.replace(b"%AUTH%", auth))
        time.sleep(0.2)
    time.sleep(0.3)
    with strict_node.client() as http:
        got = http.get(kv(key))
        assert got.status_code == 404, f"a truncated upload was stored as {got.content!r}"
        assert_error(got, 404, "not_found")
    assert_serving(strict_node)


# -- restart -------------------------------------------------------------------------------------


def test_restart_keeps_data_and_versions(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("restart").start()
    written: dict[str, tuple[bytes, str]] = {}
    with node.client() as http:
        for index in range(20):
            key = f"r:{index:02d}/ü"
            response = http.put(kv(key), content=f"value {index}".encode())
            written[key] = (f"value {index}".encode(), response.headers["etag"])
        http.delete(kv("r:00/ü"))
        del written["r:00/ü"]
        for _ in range(3):
            incr = http.post(kv("r:counter") + "/incr")
        written["r:counter"] = (b"3", incr.headers["etag"])
        http.put(kv("r:ttl"), params={"ttl": 3600}, content=b"t")
        ttl_get = http.get(kv("r:ttl"))
        written["r:ttl"] = (b"t", ttl_get.headers["etag"])
        expires_at = ttl_get.headers["x-kv-expires-at"]
        txn = http.post("/v1/txn", json={"ops": [{"op": "set", "key": "r:txn", "value": "in txn"}]}).json()
        written["r:txn"] = (b"in txn", f'"{txn["version"]}"')
        end_before = http.get("/v1/status").json()["lsn"]["commit_lsn"]

    assert node.stop() == 0, node.log()[-4000:]
    node.restart()

    with node.client() as http:
        for key, (value, etag) in written.items():
            got = http.get(kv(key))
            assert got.status_code == 200, (key, got.text)
            assert (got.content, got.headers["etag"]) == (value, etag), key
        assert http.get(kv("r:ttl")).headers["x-kv-expires-at"] == expires_at
        assert_error(http.get(kv("r:00/ü")), 404, "not_found")
        assert listed_keys(http, "r:", limit=100) == sorted(written)
        assert parse_lsn(http.get("/v1/status").json()["lsn"]["commit_lsn"]) >= parse_lsn(end_before)
        # Versions keep increasing after the restart.
        after = http.put(kv("r:new"), content=b"n")
        assert after.json()["version"] > max(int(etag.strip('"')) for _, etag in written.values())


def test_a_query_parameter_the_route_does_not_take_is_refused(client: httpx.Client, uid: str) -> None:
    """A typo must not change what a request means in silence: `?tll=5` would store the value
    without its TTL."""
    typo = client.put(kv(uid + "ttl-typo"), params={"tll": "5"}, content=b"v")
    assert "'tll'; this route takes ttl" in assert_error(typo, 400, "bad_request")["message"]
    assert client.get(kv(uid + "ttl-typo")).status_code == 404  # nothing was written
    assert "'by'" in assert_error(client.get(kv(uid + "x"), params={"by": "1"}), 400, "bad_request")["message"]
    assert "'prefx'" in assert_error(client.get("/v1/kv", params={"prefx": uid}), 400, "bad_request")["message"]
    assert client.put(kv(uid + "ttl-ok"), params={"ttl": "5"}, content=b"v").status_code == 201
    assert client.post(kv(uid + "n") + "/incr", params={"by": "2"}).json()["value"] == 2
