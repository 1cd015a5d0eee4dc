"""Logins under attack (issue 10 item 4), against real nodes: concurrent guesses are reserved
before the password is checked, the hashing pool's queue is bounded, a user attacked from
many addresses is slowed down rather than locked out, and a flood of refusals cannot rotate
the audit log away."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from support.harness import ADMIN_PASSWORD, NodeProcess


async def _concurrent_logins(node: NodeProcess, logins: list[tuple[str, str, str]]) -> list[httpx.Response]:
    """(source address, user, password) logins, all sent at once, one connection each."""

    async def one(source: str, user: str, password: str) -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(local_address=source)
        async with httpx.AsyncClient(transport=transport, timeout=120) as client:
            return await client.post(f"{node.url}/v1/auth/login", json={"username": user, "password": password})

    return await asyncio.gather(*(one(*login) for login in logins))


def _metric(node: NodeProcess, name: str) -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_concurrent_guesses_for_one_user_from_one_address_verify_at_most_the_limit(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()  # default argon2 parameters: each verify takes a while, so they overlap
    node.token()
    hashes = _metric(node, "kvstore_login_hashes_total")
    guesses = [("127.0.0.2", "admin", f"guess-{i}") for i in range(40)]
    responses = asyncio.run(_concurrent_logins(node, guesses))
    statuses = [response.status_code for response in responses]
    assert statuses.count(401) + statuses.count(429) == 40, statuses
    assert 1 <= statuses.count(401) <= 5, statuses  # the policy's login_max_failures
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "too_many_requests"
    assert _metric(node, "kvstore_login_hashes_total") - hashes <= 5
    # The real admin, elsewhere, is not locked out by them.
    assert asyncio.run(_concurrent_logins(node, [("127.0.0.3", "admin", ADMIN_PASSWORD)]))[0].status_code == 200


def test_beyond_the_hashing_queue_a_login_is_refused_at_once(node_factory) -> None:  # type: ignore[no-untyped-def]
    env = {"KVSTORE_LOGIN_HASH_THREADS": "1", "KVSTORE_LOGIN_QUEUE_MAX": "2"}
    node = node_factory(env=env).start()
    node.token()
    # Forty made-up users from forty addresses: no throttle applies, only the pool's bound.
    guesses = [(f"127.0.3.{i + 1}", f"nobody-{i}", "wrong-password") for i in range(40)]
    responses = asyncio.run(_concurrent_logins(node, guesses))
    busy = [response for response in responses if response.status_code == 429]
    assert len(busy) + sum(response.status_code == 401 for response in responses) == 40
    assert len(busy) >= 20, [response.status_code for response in responses]
    for response in busy:
        assert response.headers["retry-after"] == "1"
        assert "busy checking other logins" in response.json()["error"]["message"]
    assert _metric(node, 'kvstore_auth_failures_total{reason="login_busy"}') == len(busy)
    assert _metric(node, "kvstore_login_hashes_pending") == 0
    assert asyncio.run(_concurrent_logins(node, [("127.0.0.3", "admin", ADMIN_PASSWORD)]))[0].status_code == 200


def test_a_user_guessed_from_many_addresses_is_slowed_down_not_locked_out(node_factory) -> None:  # type: ignore[no-untyped-def]
    env = {"KVSTORE_LOGIN_USER_SLOWDOWN_AFTER_FAILURES": "1", "KVSTORE_LOGIN_USER_SLOWDOWN_MAX_S": "5"}
    node = node_factory(env=env).start()
    node.token()
    # Ten guesses at once from ten addresses: each address and pair stays below its limit.
    guesses = [(f"127.0.4.{index + 1}", "admin", "a-guess") for index in range(10)]
    statuses = [response.status_code for response in asyncio.run(_concurrent_logins(node, guesses))]
    assert set(statuses) <= {401, 429} and statuses.count(401) >= 4, statuses
    # The next one, from yet another address, waits out the user's slowdown (capped at 5 s).
    waited = asyncio.run(_concurrent_logins(node, [("127.0.4.99", "admin", "a-guess")]))[0]
    assert waited.status_code == 429 and 1 <= int(waited.headers["retry-after"]) <= 5, waited.text
    # The real admin gets in once the wait is over: slowed down, never locked out.
    deadline = time.monotonic() + 60
    while True:
        response = asyncio.run(_concurrent_logins(node, [("127.0.0.1", "admin", ADMIN_PASSWORD)]))[0]
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 200, response.text


def test_a_flood_of_refused_logins_writes_a_handful_of_audit_lines_and_never_rotates_the_log(node_factory) -> None:  # type: ignore[no-untyped-def]
    env = {
        "KVSTORE_AUDIT_LOG_MAX_BYTES": "4096",
        "KVSTORE_AUDIT_LOG_KEEP": "1",
        "KVSTORE_LOGIN_MAX_FAILURES": "2",
        # One window for the whole flood however slow a loaded machine sends it, so the counts add up exactly.
        "KVSTORE_AUDIT_REFUSAL_WINDOW_S": "600",
    }
    node: NodeProcess = node_factory(env=env).start()
    node.token()  # the admin's login_ok: it must still be in the audit log after the flood
    sent = 2000
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=node.url, transport=transport, timeout=30) as attacker:
        statuses = [
            attacker.post("/v1/auth/login", json={"username": f"u{i % 4}", "password": "wrong"}).status_code
            for i in range(sent)
        ]
    assert statuses.count(401) == 2 and statuses.count(429) == sent - 2
    assert _metric(node, 'kvstore_audit_refusals_total{written="aggregated"}') >= sent - 20
    assert node.stop() == 0  # the open window's aggregated lines are written at a clean stop
    log_dir = node.data_dir / "log"
    assert sorted(path.name for path in log_dir.iterdir() if path.name.startswith("audit")) == ["audit.jsonl"]
    events = [json.loads(line) for line in (log_dir / "audit.jsonl").read_text().splitlines()]
    assert len(events) <= 20, events
    assert any(event["event"] == "login_ok" and event["user"] == "admin" for event in events)
    # Every refusal is accounted for: one line in full per kind and address, then the window's count.
    aggregated = [event for event in events if event["event"] == "refusals_aggregated"]
    counts = {event["of"]: event["count"] for event in aggregated if event["address"] == "127.0.0.2"}
    assert counts == {"login_failed": 2, "login_throttled": sent - 2}, events
    assert not any(event["event"] == "refusals_unlogged" for event in events)
    throttled = next(event for event in aggregated if event["of"] == "login_throttled")
    assert sorted(throttled["users"]) == [f"u{i}" for i in range(4)]
