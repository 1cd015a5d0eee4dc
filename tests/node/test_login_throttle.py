"""Failed-login throttling and the audit log: the pure rules, then a brute force against a real node."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from kvstore.node.audit import AuditLog
from kvstore.node.throttle import IN_FLIGHT_RETRY_S, Attempt, LoginThrottle, ThrottlePolicy, describe
from support.harness import ADMIN_PASSWORD
from support.sessions import login

POLICY = ThrottlePolicy(max_failures=3, window_s=60, lockout_s=30)


def fail(throttle: LoginThrottle, user: str, address: str, now: float) -> list[str]:
    """One wrong password: reserve, then count the failure; returns the keys it locked."""
    attempt = throttle.reserve(user, address, now)
    assert isinstance(attempt, Attempt), f"refused for {attempt} s"
    return [describe(key) for key in throttle.failed(attempt, now)]


def test_max_failures_in_the_window_lock_the_pair_and_the_address_until_the_lockout_ends() -> None:
    throttle = LoginThrottle(POLICY)
    assert fail(throttle, "bob", "10.0.0.1", 0) == [] and fail(throttle, "bob", "10.0.0.1", 1) == []
    assert fail(throttle, "bob", "10.0.0.1", 2) == ["user:bob@10.0.0.1", "addr:10.0.0.1"]
    assert throttle.reserve("bob", "10.0.0.1", 10) == 22
    assert throttle.reserve("carol", "10.0.0.1", 10) == 22  # the address, for every user name
    assert isinstance(throttle.reserve("bob", "10.0.0.2", 10), Attempt)  # bob elsewhere is not locked out
    assert isinstance(throttle.reserve("bob", "10.0.0.1", 32), Attempt)  # the lockout ended


def test_attempts_in_flight_count_before_they_are_verified() -> None:
    throttle = LoginThrottle(POLICY)
    attempts = [throttle.reserve("bob", "10.0.0.1", 0) for _ in range(10)]
    reserved = [attempt for attempt in attempts if isinstance(attempt, Attempt)]
    assert len(reserved) == POLICY.max_failures
    assert all(attempt == IN_FLIGHT_RETRY_S for attempt in attempts if not isinstance(attempt, Attempt))
    throttle.released(reserved[0])  # refused for another reason (a full hashing pool): not a failure
    assert isinstance(throttle.reserve("bob", "10.0.0.1", 0), Attempt)


def test_failures_outside_the_window_do_not_count_and_success_resets_the_pair() -> None:
    throttle = LoginThrottle(POLICY)
    fail(throttle, "bob", "10.0.0.1", 0)
    fail(throttle, "bob", "10.0.0.1", 1)
    assert fail(throttle, "bob", "10.0.0.1", 100) == []  # the first two left the window
    success = throttle.reserve("bob", "10.0.0.1", 101)
    assert isinstance(success, Attempt)
    throttle.succeeded(success)
    fail(throttle, "bob", "10.0.0.9", 101)  # another address, so the address key stays below the limit
    assert fail(throttle, "bob", "10.0.0.1", 102) == []  # the pair started again after the success


def test_many_addresses_slow_a_user_down_with_growing_capped_waits_never_a_lockout() -> None:
    policy = ThrottlePolicy(
        max_failures=3, window_s=600, lockout_s=600, user_slowdown_after_failures=4, user_slowdown_max_s=8
    )
    throttle = LoginThrottle(policy)
    for index in range(4):  # four addresses, one guess each: below every per-address limit
        fail(throttle, "admin", f"10.0.0.{index}", 0)
    waits, now = [], 0.0
    for index in range(6):
        wait = throttle.reserve("admin", "10.9.9.9", now)
        assert isinstance(wait, float)
        waits.append(wait)
        now += wait  # counted from the end of the previous attempt
        attempt = throttle.reserve("admin", f"10.1.0.{index}", now)
        assert isinstance(attempt, Attempt)
        assert throttle.reserve("admin", "10.9.9.9", now) == IN_FLIGHT_RETRY_S  # one at a time
        throttle.failed(attempt, now)
    assert waits == [1, 2, 4, 8, 8, 8]
    assert isinstance(throttle.reserve("other", "10.9.9.9", now), Attempt)  # other users are not slowed
    throttle.unlock("admin")  # an administrator's unlock ends the slowdown
    assert isinstance(throttle.reserve("admin", "10.9.9.9", now), Attempt)


def test_tracked_keys_are_bounded() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failures=10, window_s=60, lockout_s=30, max_tracked_keys=100))
    for i in range(1000):
        fail(throttle, f"u{i}", f"10.0.{i // 250}.{i % 250}", i / 1000)
    assert len(throttle._failures) == 100


def test_audit_log_rotates_by_size_and_keeps_n_files(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=300, keep=2)
    for i in range(40):
        audit.record("login_failed", user=f"u{i}", address="127.0.0.1")
    audit.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= 300
        for line in path.read_text().splitlines():
            assert json.loads(line)["event"] == "login_failed"


def test_refusals_are_aggregated_per_address_and_window_and_beyond_the_budget_only_counted(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=1 << 20, keep=1, refusal_window_max_lines=5)
    for i in range(1000):  # 1,000 addresses: five written in full, the rest only counted
        audit.refused("login_failed", f"10.0.{i // 250}.{i % 250}", user="admin")
    for i in range(100):  # one address written in full above: its repeats are counted on its line
        audit.refused("login_failed", "10.0.0.0", user="r" * 300 if i == 0 else f"root{i % 10}")
    audit.record("login_ok", user="admin", address="127.0.0.1")  # authenticated events are always written
    audit.close()
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [event["event"] for event in events] == ["login_failed"] * 5 + ["login_ok"] + [
        "refusals_aggregated",
        "refusals_unlogged",
    ]
    assert events[-2]["address"] == "10.0.0.0" and events[-2]["count"] == 101
    assert events[-2]["users"] == ["admin", "r" * 64, "root1", "root2", "root3"]  # five, cut to 64 characters
    assert events[-1]["count"] == 995


def test_brute_force_locks_out_even_the_right_password_and_is_audited(node_factory) -> None:  # type: ignore[no-untyped-def]
    env = {"KVSTORE_LOGIN_MAX_FAILURES": "3", "KVSTORE_LOGIN_LOCKOUT_S": "2"}
    node = node_factory(env=env).start()
    wrong = [f"guess-{i}-secret" for i in range(3)]
    node.token()  # the admin's own login, before the attack
    for password in wrong:
        assert login(node, "admin", password).status_code == 401
    right = login(node, "admin", ADMIN_PASSWORD)
    assert right.status_code == 429, right.text
    assert right.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(right.headers["retry-after"]) <= 2
    # A user that does not exist gets exactly the same answers (here: the address is locked).
    ghost = login(node, "nobody", "x")
    assert ghost.status_code == 429 and ghost.json()["error"]["message"] == right.json()["error"]["message"]
    deadline = time.monotonic() + 30  # the 2 s lockout ends; poll, a loaded machine may be slow
    while (right := login(node, "admin", ADMIN_PASSWORD)).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert right.status_code == 200
    token = right.json()["token"]
    assert node.stop() == 0  # a clean stop writes the aggregated lines of the open window

    audit_text = (node.data_dir / "log" / "audit.jsonl").read_text()
    events = [json.loads(line) for line in audit_text.splitlines()]
    names = [event["event"] for event in events]
    # One line per refusal kind and address in a window, then one line with the window's count.
    assert names.count("login_failed") == 1 and names.count("login_throttled") == 1
    lockout = next(event for event in events if event["event"] == "login_lockout")
    assert lockout["keys"] == ["user:admin@127.0.0.1", "addr:127.0.0.1"]
    counts = {e["of"]: e for e in events if e["event"] == "refusals_aggregated" and e["address"] == "127.0.0.1"}
    assert counts["login_failed"]["count"] == 3 and counts["login_failed"]["users"] == ["admin"]
    assert counts["login_throttled"]["count"] >= 2 and counts["login_throttled"]["users"][:2] == ["admin", "nobody"]
    assert names.count("login_ok") >= 2  # the node's own token, and this one
    for secret in [*wrong, ADMIN_PASSWORD, token]:
        assert secret not in audit_text and secret not in node.log()


def _login_from(node, source: str, username: str, password: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    """A login sent from another loopback address (Linux routes all of 127.0.0.0/8 to lo)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.post(f"{node.url}/v1/auth/login", json={"username": username, "password": password})


def test_guesses_from_one_address_lock_the_user_out_of_that_address_only(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env={"KVSTORE_LOGIN_MAX_FAILURES": "2", "KVSTORE_LOGIN_LOCKOUT_S": "300"}).start()
    with node.client() as admin:
        body = {"name": "alice", "password": "alice-password", "roles": ["reader"]}
        assert admin.post("/v1/admin/users", json=body).status_code == 201
    for guess in ("guess-1", "guess-2"):  # the attacker at 127.0.0.2
        assert _login_from(node, "127.0.0.2", "alice", guess).status_code == 401
    refused = _login_from(node, "127.0.0.2", "alice", "alice-password")
    assert refused.status_code == 429 and 290 <= int(refused.headers["retry-after"]) <= 300
    # Alice herself, elsewhere, with the right password: not locked out by the attacker.
    assert _login_from(node, "127.0.0.3", "alice", "alice-password").status_code == 200
    with node.client() as admin:  # an admin unlock does not end the address lockout either
        assert admin.post("/v1/admin/users/alice/unlock").status_code == 200
    assert _login_from(node, "127.0.0.2", "alice", "alice-password").status_code == 429
    events = [json.loads(line) for line in (node.data_dir / "log" / "audit.jsonl").read_text().splitlines()]
    lockouts = [event["keys"] for event in events if event["event"] == "login_lockout"]
    assert lockouts == [["user:alice@127.0.0.2", "addr:127.0.0.2"]]
    assert [e["address"] for e in events if e["event"] == "login_ok" and e["user"] == "alice"] == ["127.0.0.3"]
    assert any(event["event"] == "user_unlock" and event["user"] == "alice" for event in events)


def test_an_attacked_admin_still_logs_in_elsewhere_and_an_unlock_keeps_the_admin_session(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()  # the default policy: five failures
    with node.client() as admin:
        assert admin.get("/v1/status").status_code == 200
        for index in range(5):
            assert _login_from(node, "127.0.0.2", "admin", f"guess-{index}").status_code == 401
        assert _login_from(node, "127.0.0.2", "admin", ADMIN_PASSWORD).status_code == 429
        assert _login_from(node, "127.0.0.3", "admin", ADMIN_PASSWORD).status_code == 200
        assert admin.post("/v1/admin/users/admin/unlock").status_code == 200
        assert admin.get("/v1/status").status_code == 200  # the token that unlocked still works
        assert admin.get("/v1/admin/users/admin").json()["locked_reason"] is None
