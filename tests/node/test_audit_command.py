"""`kvctl audit` and GET /v1/admin/audit against a real node: the lines the node wrote, filtered by
time and user, followed as they are written and across a rotation, superusers only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvstore.cli.commands.audit import audit_line, since_time
from support.harness import CHEAP_HASHING, NodeProcess
from support.kvctl_runner import as_env, kvctl, ok, spawn_kvctl
from support.sessions import bearer, login_token
from support.waiting import wait_until

PASSWORD = "audit-reader-password"
# Small files: a few dozen lines rotate the log, so following across a rotation is cheap to show.
ROTATING = {**CHEAP_HASHING, "KVSTORE_AUDIT_LOG_MAX_BYTES": "4096", "KVSTORE_AUDIT_LOG_KEEP": "3"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path_factory.mktemp("audit") / "node", env=ROTATING)
    try:
        process.start()
        with process.client() as admin:
            for name in ("aud-w", "aud-x"):
                created = admin.post("/v1/admin/users", json={"name": name, "password": PASSWORD, "roles": ["writer"]})
                assert created.status_code == 201, created.text
        yield process
    finally:
        process.close()


def _events(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line]


def _failed_login(node: NodeProcess, user: str) -> None:
    with node.client() as client:
        answer = client.post("/v1/auth/login", json={"username": user, "password": "wrong-password"})
        assert answer.status_code == 401


def test_kvctl_audit_prints_what_the_node_wrote_filtered_by_user_and_time(node: NodeProcess, tmp_path: Path) -> None:
    login_token(node, "aud-w", PASSWORD)
    _failed_login(node, "aud-x")
    everything = _events(ok(kvctl("audit", "--format", "json", config=tmp_path / "login", env=as_env(node))))
    names = [(event["event"], event.get("user")) for event in everything]
    assert ("user_created", "aud-w") in names and ("login_ok", "aud-w") in names
    assert ("login_failed", "aud-x") in names
    assert [event["ts"] for event in everything] == sorted(str(event["ts"]) for event in everything)

    about_w = _events(
        ok(kvctl("audit", "--user", "aud-w", "--format", "json", config=tmp_path / "login", env=as_env(node)))
    )
    assert about_w and all("aud-w" in (event.get("user"), event.get("by")) for event in about_w)
    assert {"user_created", "login_ok"} <= {str(event["event"]) for event in about_w}
    # The admin created both users: as the actor (`by`) it is in those lines too.
    by_admin = _events(
        ok(kvctl("audit", "--user", "admin", "--format", "json", config=tmp_path / "login", env=as_env(node)))
    )
    assert {("user_created", "aud-w"), ("user_created", "aud-x")} <= {(e["event"], e.get("user")) for e in by_admin}

    time.sleep(1.1)  # the log's times are whole seconds
    later = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    login_token(node, "aud-x", PASSWORD)
    recent = _events(
        ok(kvctl("audit", "--since", later, "--format", "json", config=tmp_path / "login", env=as_env(node)))
    )
    assert ("login_ok", "aud-x") in [(e["event"], e.get("user")) for e in recent]
    assert all(str(e["ts"]) >= later for e in recent) and len(recent) < len(everything)
    assert "login_ok" in ok(kvctl("audit", "--since", "1m", config=tmp_path / "login", env=as_env(node)))

    text = ok(kvctl("audit", "--user", "aud-x", config=tmp_path / "login", env=as_env(node)))
    assert any(line.split()[1] == "login_failed" and "user=aud-x" in line for line in text.splitlines()), text


def test_follow_prints_new_lines_as_written_and_across_a_rotation(node: NodeProcess, tmp_path: Path) -> None:
    log_dir = node.data_dir / "log"
    follower = spawn_kvctl(
        "audit",
        "--follow",
        "--since",
        "1s",
        "--user",
        "aud-w",
        "--format",
        "json",
        config=tmp_path / "login",
        env=as_env(node),
    )
    try:
        assert follower.stdout is not None
        login_token(node, "aud-w", PASSWORD)  # the follower is following once it prints this one
        assert json.loads(follower.stdout.readline())["event"] == "login_ok"
        # Failed logins of two users write lines in full (one per user and address a window, the
        # rest aggregated), so alternate a successful login: every login_ok is a line.
        sent = 0
        while sent < 30 or not (log_dir / "audit.jsonl.1").exists():
            login_token(node, "aud-w", PASSWORD)
            sent += 1
            assert sent < 200, "the audit log never rotated"
        lines: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while sum(event["event"] == "login_ok" for event in lines) < sent:
            assert time.monotonic() < deadline, f"{len(lines)} lines followed, {sent} logins"
            line = follower.stdout.readline()
            assert line, follower.stderr.read() if follower.stderr else ""
            lines.append(json.loads(line))
        assert all(event.get("user") == "aud-w" or event.get("by") == "aud-w" for event in lines)
        assert follower.poll() is None  # still following
    finally:
        follower.kill()
        follower.wait()


def test_only_superusers_and_bad_parameters_refused(node: NodeProcess, tmp_path: Path) -> None:
    with bearer(node, login_token(node, "aud-w", PASSWORD)) as writer:
        refused = writer.get("/v1/admin/audit")
        assert refused.status_code == 403
        assert "admin routes need the admin role" in refused.json()["error"]["message"]
    with node.client() as admin:
        for params, message in [
            ({"since": "yesterday"}, "not an ISO 8601 time"),
            ({"follow": "maybe"}, "must be true or false"),
            ({"user": "x" * 257}, "1 to 256 characters"),
            ({"lines": "5"}, "unknown query parameter 'lines'"),
        ]:
            answer = admin.get("/v1/admin/audit", params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert message in answer.json()["error"]["message"]
    usage = kvctl("audit", "--since", "last week", config=tmp_path / "login", env=as_env(node))
    assert usage.returncode == 2 and "neither an ISO 8601 time" in usage.stderr


def test_since_and_line_rendering() -> None:
    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    assert since_time("90s", now) == "2026-12-03T11:58:30Z"
    assert since_time("2h", now) == "2026-12-03T10:00:00Z"
    assert since_time("2026-12-03T13:00:00+01:00") == "2026-12-03T12:00:00Z"
    assert since_time("2026-12-03 12:00") == "2026-12-03T12:00:00Z"
    line = audit_line(
        '{"ts":"2026-12-03T12:00:00Z","event":"user_created","roles":["writer"],"by":"admin","user":"a b"}'
    )
    assert line == '2026-12-03T12:00:00Z  user_created           user="a b" by=admin roles=["writer"]'


def test_follow_ends_when_the_client_leaves(node: NodeProcess) -> None:
    """A follower that disconnects does not keep its files open on the node."""
    proc_fd = Path(f"/proc/{node.process.pid}/fd") if node.process else None
    assert proc_fd is not None

    def audit_files_open() -> int:
        return sum("audit.jsonl" in str(fd.readlink()) for fd in proc_fd.iterdir() if fd.is_symlink())

    before = audit_files_open()
    with node.client() as admin, admin.stream("GET", "/v1/admin/audit", params={"follow": "true"}) as answer:
        assert answer.status_code == 200
        wait_until(lambda: audit_files_open() > before, timeout_s=10, what="the follower opened the log")
    wait_until(lambda: audit_files_open() == before, timeout_s=20, what="the follower closed the log")
