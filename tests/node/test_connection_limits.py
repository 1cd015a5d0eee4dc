"""Connection and request limits against a real node (issue 10 items 1, 2 and 7).

The node runs with small limits (16 connections, 4 requests in flight per address, 2 s header
and body timeouts) so a test opens tens of sockets, not thousands. Hostile traffic comes from
127.0.0.2, a loopback address that is not exempt from the per-address limit; the operator
(and the test's own checks) use 127.0.0.1 or the operator listener.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from support.harness import CHEAP_HASHING, NodeProcess, free_port
from support.rawhttp import OTHER_ADDRESS, closed_by_server, connect, read_response, request_head, vm_rss_kib

MAX_CONNECTIONS = 16
PER_ADDRESS = 4
TIMEOUT_MS = 2000
MAX_BODY_BYTES = 1024 * 1024
PASSWORD = "limits-test-password"
# Generous bounds for a loaded machine: "at once" means well before any timeout would fire.
AT_ONCE_S = 1.5
DROPPED_WITHIN_S = TIMEOUT_MS / 1000 + 10


@pytest.fixture(scope="module")
def operator_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, operator_port: int) -> Iterator[NodeProcess]:
    env = {
        **CHEAP_HASHING,
        "KVSTORE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "KVSTORE_MAX_REQUESTS_IN_FLIGHT_PER_ADDRESS": str(PER_ADDRESS),
        "KVSTORE_HTTP_HEADER_TIMEOUT_MS": str(TIMEOUT_MS),
        "KVSTORE_HTTP_BODY_TIMEOUT_MS": str(TIMEOUT_MS),
        "KVSTORE_MAX_VALUE_BYTES": str(MAX_BODY_BYTES // 2),
        "KVSTORE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "KVSTORE_MAX_BODY_BYTES_IN_FLIGHT": str(2 * MAX_BODY_BYTES),
        "KVSTORE_OPERATOR_LISTEN": f"127.0.0.1:{operator_port}",
    }
    node = NodeProcess(tmp_path_factory.mktemp("limits") / "node", env=env)
    try:
        node.start()
        with node.client() as admin:
            created = admin.post("/v1/admin/users", json={"name": "w", "password": PASSWORD, "roles": ["writer"]})
            assert created.status_code == 201, created.text
        yield node
    finally:
        node.close()


@pytest.fixture(scope="module")
def writer_token(node: NodeProcess) -> str:
    response = httpx.post(f"{node.url}/v1/auth/login", json={"username": "w", "password": PASSWORD}, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def metric(node: NodeProcess, line_start: str) -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    assert len(values) == 1, (line_start, values)
    return values[0]


def wait_until_no_request_in_flight(node: NodeProcess) -> None:
    """Poll (the /metrics scrape itself is one request in flight) with a deadline."""
    deadline = time.monotonic() + DROPPED_WITHIN_S
    while metric(node, "kvstore_http_requests_in_flight ") > 1:
        assert time.monotonic() < deadline, "requests still in flight"
        time.sleep(0.05)


def stalled_put(
    node: NodeProcess, token: str, key: str, source: str = OTHER_ADDRESS, length: int = 10
) -> socket.socket:
    """A PUT whose headers announce `length` bytes of body that never come."""
    sock = connect(node.port, source)
    head = {"Authorization": f"Bearer {token}", "Content-Length": str(length)}
    sock.sendall(request_head("PUT", f"/v1/kv/{key}", head))
    return sock


def test_no_other_process_can_bind_the_port(node: NodeProcess, operator_port: int) -> None:
    for port in (node.port, operator_port):
        with socket.socket() as intruder:
            intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError) as refused:
                intruder.bind(("127.0.0.1", port))
            assert refused.value.errno == errno.EADDRINUSE


def test_operator_listener_serves_while_idle_connections_fill_the_cap(node: NodeProcess, operator_port: int) -> None:
    idle = [connect(node.port, OTHER_ADDRESS) for _ in range(MAX_CONNECTIONS)]
    try:
        # Every connection permit is taken: a new client of the main listener waits...
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{node.url}/health", timeout=0.5)
        # ...while the operator reaches the probes and the admin API on its own listener.
        operator = f"http://127.0.0.1:{operator_port}"
        assert httpx.get(f"{operator}/health", timeout=AT_ONCE_S).status_code == 200
        assert httpx.get(f"{operator}/metrics", timeout=AT_ONCE_S).status_code == 200
        admin = {"authorization": f"Bearer {node.token()}"}
        assert httpx.get(f"{operator}/v1/admin/users", headers=admin, timeout=AT_ONCE_S).status_code == 200
        # Idle connections are dropped after the header timeout, and the main listener serves again.
        assert all(closed_by_server(sock, DROPPED_WITHIN_S) for sock in idle)
        assert httpx.get(f"{node.url}/health", timeout=DROPPED_WITHIN_S).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_idle_keep_alive_connection_is_dropped_after_the_header_timeout(node: NodeProcess) -> None:
    with connect(node.port, OTHER_ADDRESS) as sock:
        sock.sendall(request_head("GET", "/health"))
        first = read_response(sock)
        assert first is not None and first.status == 200
        started = time.monotonic()
        assert closed_by_server(sock, DROPPED_WITHIN_S)
        assert time.monotonic() - started >= TIMEOUT_MS / 1000 * 0.5  # the timeout, not at once


def test_stalled_body_gets_408_and_frees_its_slot(node: NodeProcess, writer_token: str) -> None:
    with stalled_put(node, writer_token, "stalled:a") as sock:
        response = read_response(sock, timeout_s=DROPPED_WITHIN_S)
        assert response is not None and response.status == 408, response
        assert response.json()["error"]["code"] == "request_timeout"
        assert response.headers["connection"] == "close"
    assert metric(node, 'kvstore_http_rejected_total{reason="body_timeout"}') >= 1
    wait_until_no_request_in_flight(node)
    with node.client() as admin:
        assert admin.get("/v1/kv/stalled:a").status_code == 404


def test_per_address_limit_refuses_before_the_body_and_ignores_forwarding_headers(
    node: NodeProcess, writer_token: str
) -> None:
    stalled = [stalled_put(node, writer_token, f"stalled:{index}") for index in range(PER_ADDRESS)]
    try:
        deadline = time.monotonic() + DROPPED_WITHIN_S  # the stalled requests reach the node
        while metric(node, "kvstore_http_requests_in_flight ") < PER_ADDRESS + 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        forged = {
            "Authorization": f"Bearer {writer_token}",
            "X-Forwarded-For": "127.0.0.1",
            "X-Real-IP": "127.0.0.1",
            "Forwarded": "for=127.0.0.1",
            "Content-Length": "5",
        }
        with connect(node.port, OTHER_ADDRESS) as sock:
            started = time.monotonic()
            sock.sendall(request_head("PUT", "/v1/kv/stalled:more", forged))  # and no body: not needed
            refused = read_response(sock, timeout_s=AT_ONCE_S)
            assert refused is not None and refused.status == 429, refused
            assert time.monotonic() - started < AT_ONCE_S
            assert refused.json()["error"]["code"] == "too_many_requests"
            assert "max_requests_in_flight_per_address" in refused.json()["error"]["message"]
        # The reserve: a superuser from the same address, and other addresses, are still served.
        with connect(node.port, OTHER_ADDRESS) as sock:
            sock.sendall(request_head("GET", "/v1/status", {"Authorization": f"Bearer {node.token()}"}))
            status = read_response(sock, timeout_s=AT_ONCE_S)
            assert status is not None and status.status == 200, status
        headers = {"authorization": f"Bearer {writer_token}"}
        assert httpx.put(f"{node.url}/v1/kv/other:x", content=b"v", headers=headers, timeout=5).status_code == 201
    finally:
        for sock in stalled:
            sock.close()
    assert metric(node, 'kvstore_http_rejected_total{reason="address_in_flight_limit"}') >= 1
    wait_until_no_request_in_flight(node)


def test_unauthenticated_bodies_are_refused_unread(node: NodeProcess) -> None:
    before_kib = vm_rss_kib(node.process.pid)  # type: ignore[union-attr]
    for index in range(50):
        with connect(node.port, OTHER_ADDRESS) as sock:
            started = time.monotonic()
            head = {"Content-Length": str(MAX_BODY_BYTES), "Authorization": "Bearer not-a-token" if index % 2 else ""}
            sock.sendall(request_head("POST", "/v1/txn", {k: v for k, v in head.items() if v}))
            sock.sendall(b"{" * (64 * 1024))  # part of the body, never all of it
            response = read_response(sock, timeout_s=AT_ONCE_S)
            assert response is not None and response.status == 401, response
            assert time.monotonic() - started < AT_ONCE_S
            assert response.headers["connection"] == "close"
    assert vm_rss_kib(node.process.pid) - before_kib < 32 * 1024  # type: ignore[union-attr]
    wait_until_no_request_in_flight(node)


def test_body_memory_in_flight_is_bounded(node: NodeProcess) -> None:
    token = node.token()  # a superuser from an exempt address: the bound holds for everyone
    stalled = [stalled_put(node, token, f"big:{index}", "127.0.0.1", MAX_BODY_BYTES // 2) for index in range(4)]
    try:
        deadline = time.monotonic() + DROPPED_WITHIN_S
        while metric(node, "kvstore_http_body_bytes_in_flight ") < 2 * MAX_BODY_BYTES:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with node.client() as admin:
            refused = admin.put("/v1/kv/big:more", content=b"x" * 100)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            assert refused.headers["retry-after"] == "1"
    finally:
        for sock in stalled:
            sock.close()
    wait_until_no_request_in_flight(node)
    assert metric(node, "kvstore_http_body_bytes_in_flight ") == 0
    with node.client() as admin:
        assert admin.put("/v1/kv/big:more", content=b"x" * 100).status_code == 201


def test_login_has_its_own_small_body_limit(node: NodeProcess) -> None:
    body = b'{"username": "admin", "password": "' + b"p" * 9000 + b'"}'
    response = httpx.post(f"{node.url}/v1/auth/login", content=body, timeout=10)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["limit_bytes"] == 8192


def test_half_closed_body_is_a_400_not_a_500(node: NodeProcess) -> None:
    with connect(node.port) as sock:
        head = {"Authorization": f"Bearer {node.token()}", "Content-Length": "10"}
        sock.sendall(request_head("PUT", "/v1/kv/half:closed", head) + b"abc")
        sock.shutdown(socket.SHUT_WR)
        response = read_response(sock)
        assert response is not None and response.status == 400, response
        assert response.json()["error"]["code"] == "incomplete_body"
    with node.client() as admin:
        assert admin.get("/v1/kv/half:closed").status_code == 404


def test_a_connection_cap_the_open_files_limit_cannot_hold_refuses_to_start(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("too-many", env={"KVSTORE_MAX_CONNECTIONS": "100000000"})
    process = node.spawn()
    try:
        assert process.wait(60) == 2  # a configuration error
    finally:
        if process.poll() is None:
            process.kill()
    assert "lower max_connections" in node.log()


def test_an_operator_reaches_probes_and_admin_api_while_requests_are_at_the_limit(node_factory) -> None:  # type: ignore[no-untyped-def]
    """max_requests_in_flight requests held (bodies that never come, from the exempt loopback so
    only the total limit applies): a further data request is refused, while the probes and a
    superuser's admin API still get in (operator_reserved_requests)."""
    limit = 4
    env = {
        **CHEAP_HASHING,
        "KVSTORE_MAX_REQUESTS_IN_FLIGHT": str(limit),
        "KVSTORE_HTTP_BODY_TIMEOUT_MS": "30000",  # held for the whole test
    }
    node = node_factory("reserve", env=env).start()
    token = node.token()
    held = [stalled_put(node, token, f"held:{index}", source="127.0.0.1") for index in range(limit)]
    try:
        deadline = time.monotonic() + DROPPED_WITHIN_S
        while metric(node, "kvstore_http_requests_in_flight ") < limit + 1:  # the held ones and this scrape
            assert time.monotonic() < deadline, "the held requests never arrived"
            time.sleep(0.05)
        admin = {"authorization": f"Bearer {token}"}
        refused = httpx.get(f"{node.url}/v1/kv/held:0", headers=admin, timeout=AT_ONCE_S)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_requests"
        assert httpx.get(f"{node.url}/health", timeout=AT_ONCE_S).status_code == 200
        assert httpx.get(f"{node.url}/metrics", timeout=AT_ONCE_S).status_code == 200
        assert httpx.get(f"{node.url}/v1/admin/users", headers=admin, timeout=AT_ONCE_S).status_code == 200
    finally:
        for sock in held:
            sock.close()
