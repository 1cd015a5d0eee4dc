"""Failed-login throttling and the audit log: the pure rules, then a brute force against a real node."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from harness import ADMIN_PASSWORD
from kvstore.node.audit import AuditLog
from kvstore.node.throttle import LoginThrottle, ThrottlePolicy

KEYS = ("user:bob", "addr:10.0.0.1")


def test_max_failures_in_the_window_lock_every_key_until_the_lockout_ends() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failures=3, window_s=60, lockout_s=30))
    assert throttle.failed(KEYS, now=0) == [] and throttle.failed(KEYS, now=1) == []
    assert throttle.retry_after_s(KEYS, now=2) == 0
    assert throttle.failed(KEYS, now=2) == list(KEYS)
    assert throttle.retry_after_s(KEYS, now=10) == 22
    assert throttle.retry_after_s(("user:bob",), now=31.9) > 0
    assert throttle.retry_after_s(KEYS, now=32) == 0  # the lockout ended


def test_failures_outside_the_window_do_not_count_and_success_resets() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failures=3, window_s=60, lockout_s=30))
    throttle.failed(KEYS, now=0)
    throttle.failed(KEYS, now=1)
    assert throttle.failed(KEYS, now=100) == []  # the first two left the window
    throttle.succeeded(KEYS)
    throttle.failed(KEYS, now=101)
    assert throttle.failed(KEYS, now=102) == []  # counting started again after the success


def test_tracked_keys_are_bounded() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failures=10, window_s=60, lockout_s=30, max_tracked_keys=100))
    for i in range(1000):
        throttle.failed((f"addr:{i}",), now=i / 1000)
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


def test_brute_force_locks_out_even_the_right_password_and_is_audited(node_factory) -> None:  # type: ignore[no-untyped-def]
    env = {"KVSTORE_LOGIN_MAX_FAILURES": "3", "KVSTORE_LOGIN_LOCKOUT_S": "2"}
    node = node_factory(env=env).start()
    login = f"{node.url}/v1/auth/login"
    wrong = [f"guess-{i}-secret" for i in range(3)]
    for password in wrong:
        response = httpx.post(login, json={"username": "admin", "password": password}, timeout=10)
        assert response.status_code == 401
    right = httpx.post(login, json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=10)
    assert right.status_code == 429, right.text
    assert right.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(right.headers["retry-after"]) <= 2
    # A user that does not exist gets exactly the same answers (here: the address is locked).
    ghost = httpx.post(login, json={"username": "nobody", "password": "x"}, timeout=10)
    assert ghost.status_code == 429 and ghost.json()["error"]["message"] == right.json()["error"]["message"]
    time.sleep(2.2)
    assert httpx.post(login, json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=10).status_code == 200

    audit_text = (node.data_dir / "log" / "audit.jsonl").read_text()
    events = [json.loads(line)["event"] for line in audit_text.splitlines()]
    assert events.count("login_failed") == 3
    assert events.count("login_lockout") == 2  # the user and the address
    assert events.count("login_throttled") == 2
    assert events[-1] == "login_ok"
    for secret in [*wrong, ADMIN_PASSWORD]:
        assert secret not in audit_text and secret not in node.log()
    token = httpx.post(login, json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=10).json()["token"]
    assert token not in audit_text and token not in node.log()


def _login_from(node, source: str, username: str, password: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    """A login sent from another loopback address (Linux routes all of 127.0.0.0/8 to lo)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.post(f"{node.url}/v1/auth/login", json={"username": username, "password": password})


def test_an_admin_unlock_ends_the_user_lockout_but_not_the_address_lockout(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env={"KVSTORE_LOGIN_MAX_FAILURES": "2", "KVSTORE_LOGIN_LOCKOUT_S": "300"}).start()
    with node.client() as admin:
        body = {"name": "alice", "password": "alice-password", "roles": ["reader"]}
        assert admin.post("/v1/admin/users", json=body).status_code == 201
    for guess in ("guess-1", "guess-2"):  # the attacker at 127.0.0.2
        assert _login_from(node, "127.0.0.2", "alice", guess).status_code == 401
    # Alice herself, elsewhere, with the right password: her name is locked.
    assert _login_from(node, "127.0.0.3", "alice", "alice-password").status_code == 429
    with node.client() as admin:  # the admin logs in from 127.0.0.1, which is not locked
        assert admin.post("/v1/admin/users/alice/unlock").status_code == 200
    assert _login_from(node, "127.0.0.3", "alice", "alice-password").status_code == 200
    assert _login_from(node, "127.0.0.2", "alice", "alice-password").status_code == 429  # the address stays locked
    events = [json.loads(line) for line in (node.data_dir / "log" / "audit.jsonl").read_text().splitlines()]
    lockouts = {event["key"] for event in events if event["event"] == "login_lockout"}
    assert lockouts == {"user:alice", "addr:127.0.0.2"}
    assert [e["address"] for e in events if e["event"] == "login_ok" and e["user"] == "alice"] == ["127.0.0.3"]
    assert any(event["event"] == "user_unlock" and event["user"] == "alice" for event in events)
