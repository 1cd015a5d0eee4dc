"""End to end tests of `kvctl`: the real command, as a subprocess, against real nodes.

One node (module scope) serves the online commands; each test uses its own key
prefix and its own login file. The offline WAL tests stop a node of their own.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import signal
import socket
import stat
import subprocess
import threading
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import quote

import pytest

from kvstore.cli.commands.data import glob_prefix
from kvstore.cli.credentials import DEFAULT_URL, Login, Target, resolve
from kvstore.node import records as wal_records
from kvstore.node.wal.format import FRAME_HEADER_BYTES, format_lsn
from kvstore.node.wal.reader import WalScan
from support.harness import ADMIN_PASSWORD, NodeProcess, free_port
from support.kvctl_runner import (
    KVCTL,
    KVCTL_TIMEOUT_S,
    as_env,
    fails,
    fails_json,
    kvctl,
    kvctl_env,
    kvctl_json,
    kvctl_login,
    ok,
    spawn_kvctl,
)

FOLLOW_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("kvctl") / "node")
    try:
        node.start()
        yield node
    finally:
        node.close()


# -- pure parts -----------------------------------------------------------------------------


def url_and_token(target: Target) -> tuple[str, str | None]:
    return target.url, target.token


def test_resolve_prefers_flags_then_environment_then_login_file() -> None:
    saved = Login("http://saved:1/", "file-token", "admin", expires_at=2**40)
    environ = {"KVCTL_URL": "http://env:2", "KVCTL_TOKEN": "env-token"}

    assert url_and_token(resolve("http://flag:3", "flag-token", environ, saved)) == ("http://flag:3", "flag-token")
    assert url_and_token(resolve(None, None, environ, saved)) == ("http://env:2", "env-token")
    assert url_and_token(resolve(None, None, {}, saved)) == ("http://saved:1", "file-token")
    assert url_and_token(resolve(None, None, {}, None)) == (DEFAULT_URL, None)
    # The saved token also goes to another URL (one token serves a whole cluster), until it expires.
    other = resolve("http://other:4", None, {}, saved)
    assert url_and_token(other) == ("http://other:4", "file-token")
    assert other.hint == (
        "the login file's token is for http://saved:1 and was refused by http://other:4; "
        "log in there with kvctl login --url http://other:4"
    )
    expired = Login("http://saved:1", "file-token", "admin", expires_at=1)
    assert "expired" in resolve(None, None, {}, expired).hint
    assert resolve("http://other:4", None, {}, expired).token is None


def test_glob_prefix_is_the_text_before_the_first_glob_character() -> None:
    assert glob_prefix("user:*") == "user:"
    assert glob_prefix("a?b*") == "a"
    assert glob_prefix("[ab]x") == ""
    assert glob_prefix("exact") == "exact"


# -- login and credentials ----------------------------------------------------------------


def test_login_writes_a_private_file_that_later_commands_use(shared: NodeProcess, config: Path) -> None:
    result = ok(kvctl("login", "--url", shared.url, "--password-stdin", config=config, stdin=ADMIN_PASSWORD.encode()))

    assert result.startswith(f"logged in as admin at {shared.url} (token expires ")
    assert ADMIN_PASSWORD not in result
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    saved = json.loads(config.read_text())
    assert saved["url"] == shared.url and saved["user"] == "admin" and saved["token"] not in result
    assert isinstance(saved["expires_at"], int)
    # No URL or token given: both come from the login file.
    ok(kvctl("set", "login:a", "from-file", config=config))
    assert ok(kvctl("get", "login:a", config=config)) == "from-file"

    password_line = f"{ADMIN_PASSWORD}\n".encode()
    again = json.loads(
        ok(kvctl("login", "--url", shared.url, "--password-stdin", "--format=json", config=config, stdin=password_line))
    )
    assert again["url"] == shared.url and again["user"] == "admin" and "token" not in again


def test_login_with_a_wrong_password_fails_and_writes_nothing(shared: NodeProcess, config: Path) -> None:
    reason = fails(kvctl("login", "--url", shared.url, "--password-stdin", config=config, stdin=b"wrong\n"))

    assert "invalid username or password" in reason
    assert not config.exists()


def test_environment_gives_url_and_token_and_flags_win(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    ok(kvctl("set", "env:a", "1", config=config, env=env))

    assert ok(kvctl("get", "env:a", config=config, env=env)) == "1"
    bad_env = {"KVCTL_URL": shared.url, "KVCTL_TOKEN": "bad"}
    assert ok(kvctl("get", "env:a", "--token", env["KVCTL_TOKEN"], config=config, env=bad_env)) == "1"
    assert (
        fails(kvctl("get", "env:a", config=config, env=bad_env))
        == "kvctl: invalid token: Not enough segments; check $KVCTL_TOKEN"
    )
    reason = fails(kvctl("get", "env:a", config=config, env={"KVCTL_URL": shared.url}))
    assert reason == f"kvctl: not logged in; run kvctl login --url {shared.url} or set $KVCTL_TOKEN"


def test_login_token_goes_to_another_url_and_a_refusal_names_both(
    shared: NodeProcess,
    config: Path,
    node_factory,  # type: ignore[no-untyped-def]
) -> None:
    ok(kvctl_login(shared, config))
    same_node = shared.url.replace("127.0.0.1", "localhost")

    assert kvctl_json("--url", same_node, "status", config=config)["role"] == "primary"

    stranger = node_factory("stranger").start()  # a system of its own: it knows no token of shared's
    reason = fails(kvctl("--url", stranger.url, "status", config=config))
    assert reason == (
        f"kvctl: invalid token: unknown signing key; the login file's token is for {shared.url} and was refused by {stranger.url}; "
        f"log in there with kvctl login --url {stranger.url}"
    )
    assert ok(kvctl("status", "--url", stranger.url, "--token", stranger.token(), config=config))
    env_token = {"KVCTL_TOKEN": stranger.token()}
    assert ok(kvctl("status", "--url", stranger.url, config=config, env=env_token))


def test_unreachable_url_gives_a_one_line_reason(config: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    reason = fails(kvctl("status", "--url", url, "--token", "t", config=config))

    assert reason == f"kvctl: cannot reach {url}: connection refused"


def test_errors_with_format_json_are_one_json_document_on_stderr(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    missing = ["get", "json-errors:missing"]
    table_reason = fails(kvctl(*missing, config=config, env=env))

    assert fails_json(kvctl(*missing, "--format", "json", config=config, env=env)) == {
        "code": "not_found",
        "message": table_reason.removeprefix("kvctl: "),
    }
    refused = kvctl("--format=json", "status", "--token", "bad", config=config, env=env)
    assert fails_json(refused) == {
        "code": "unauthorized",
        "message": "invalid token: Not enough segments; check --token",
    }
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = kvctl("--format", "json", "status", "--url", dead, "--token", "t", config=config)
    assert fails_json(unreachable) == {"code": "unreachable", "message": f"cannot reach {dead}: connection refused"}
    bad_lsn = fails_json(kvctl("wal", "tail", "--from", "zz", "--format", "json", config=config), code=2)
    assert bad_lsn["code"] == "usage" and "'--from'" in bad_lsn["message"] and "'zz'" in bad_lsn["message"]
    no_command = fails_json(kvctl("--format", "json", "frobnicate", config=config), code=2)
    assert no_command == {"code": "usage", "message": "No such command 'frobnicate'."}


def test_bad_usage_exits_2(config: Path) -> None:
    assert kvctl("wal", "tail", "--from", "zz", config=config).returncode == 2
    assert kvctl("set", "k", "v", "--if-version", "1", "--create-only", config=config).returncode == 2
    assert kvctl("frobnicate", config=config).returncode == 2


# -- data commands ------------------------------------------------------------------------


def test_set_get_del_incr_round_trip(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    created = kvctl_json("set", "rt:a", "hello", config=config, env=env)
    assert created["key"] == "rt:a" and created["created"] is True

    assert ok(kvctl("get", "rt:a", config=config, env=env)) == "hello"
    updated = ok(kvctl("set", "rt:a", "world", config=config, env=env))
    assert updated.startswith("updated rt:a version=")
    shown = json.loads(ok(kvctl("get", "rt:a", "--format=json", config=config, env=env)))
    assert shown == {"key": "rt:a", "value": "world", "version": created["version"] + 1, "expires_at": None}

    reason = fails(kvctl("set", "rt:a", "again", "--create-only", config=config, env=env))
    assert "rt:a" in reason and "exists" in reason
    assert "rt:a" in fails(kvctl("set", "rt:a", "cas", "--if-version", str(created["version"]), config=config, env=env))
    ok(kvctl("set", "rt:a", "cas", "--if-version", str(shown["version"]), config=config, env=env))
    assert ok(kvctl("get", "rt:a", config=config, env=env)) == "cas"

    deleted = kvctl_json("del", "rt:a", config=config, env=env)
    assert deleted["key"] == "rt:a" and deleted["deleted"] is True
    assert "not" in fails(kvctl("get", "rt:a", config=config, env=env))
    assert "rt:a" in fails(kvctl("del", "rt:a", config=config, env=env))

    assert ok(kvctl("incr", "rt:n", config=config, env=env)) == "1\n"
    counted = kvctl_json("incr", "rt:n", "--by", "-5", config=config, env=env)
    assert counted["key"] == "rt:n" and counted["value"] == -4


def test_get_adds_a_newline_on_a_terminal_only(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    ok(kvctl("set", "tty:a", "no newline", config=config, env=env))

    assert ok(kvctl("get", "tty:a", config=config, env=env)) == "no newline"  # a pipe gets the bytes as they are
    assert _on_a_terminal(["get", "tty:a"], config, env) == b"no newline\n"


def _on_a_terminal(args: list[str], config: Path, env: dict[str, str]) -> bytes:
    """What kvctl writes to a stdout that is a terminal (a raw pseudo-terminal: no newline translation)."""
    controller, terminal = pty.openpty()
    try:
        try:
            tty.setraw(terminal)
            command = subprocess.run(
                [*KVCTL, *args],
                env=kvctl_env(config, env),
                stdin=subprocess.DEVNULL,
                stdout=terminal,
                stderr=subprocess.PIPE,
                timeout=KVCTL_TIMEOUT_S,
            )
        finally:
            os.close(terminal)  # the controller reads to the end only once the terminal side is closed
        assert command.returncode == 0, command.stderr
        return b"".join(iter(lambda: _read_terminal(controller), b""))
    finally:
        os.close(controller)


def _read_terminal(controller: int) -> bytes:
    """The next bytes from a pseudo-terminal; b"" once it is closed (Linux reports EIO then)."""
    try:
        return os.read(controller, 4096)
    except OSError:
        return b""


def test_values_from_stdin_odd_keys_and_ttl(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    ok(kvctl("set", "odd:bin", "-", config=config, env=env, stdin=b"\xff\x00\x01"))
    shown = kvctl_json("get", "odd:bin", config=config, env=env)
    assert shown["value_base64"] == "/wAB" and "value" not in shown

    key = "odd: spaces/slash?&%"
    ok(kvctl("set", key, "v", config=config, env=env))
    assert ok(kvctl("get", key, config=config, env=env)) == "v"

    ok(kvctl("set", "odd:ttl", "v", "--ttl", "300", config=config, env=env))
    assert kvctl_json("get", "odd:ttl", config=config, env=env)["expires_at"]


def test_keys_follows_pages_and_filters_by_pattern(shared: NodeProcess, config: Path) -> None:
    with shared.client() as client:
        for index in range(25):
            assert client.put(f"/v1/kv/page:{index:02d}", content=b"x" * index).status_code == 201
        assert client.put("/v1/kv/pagex", content=b"not a match").status_code == 201
    env = as_env(shared)

    listed = kvctl_json("keys", "--pattern", "page:*", "--page-size", "4", config=config, env=env)
    assert [item["key"] for item in listed["keys"]] == [f"page:{index:02d}" for index in range(25)]
    assert listed["keys"][7]["value_bytes"] == 7 and listed["truncated"] is False

    teens = json.loads(
        ok(kvctl("--format=json", "keys", "--pattern", "page:1?", "--page-size", "3", config=config, env=env))
    )
    assert [item["key"] for item in teens["keys"]] == [f"page:{index}" for index in range(10, 20)]

    first = kvctl("keys", "--pattern", "page:*", "--limit", "5", "--page-size", "2", config=config, env=env)
    lines = ok(first).splitlines()
    assert lines[0].split() == ["KEY", "VERSION", "BYTES", "EXPIRES"]
    assert [line.split()[0] for line in lines[1:]] == [f"page:{index:02d}" for index in range(5)]
    assert "--limit" in first.stderr


def test_keys_shows_control_characters_escaped_never_raw(shared: NodeProcess, config: Path) -> None:
    """A key may hold bidi overrides and marks (the node refuses C0 controls): a table shows them
    escaped, so listing keys cannot disguise a key on the admin's terminal; JSON escapes them the
    JSON way, exact for scripts once parsed."""
    nasty = "esc:\u202etxt.exe\u2066end\u200f"
    with shared.client() as client:
        assert client.put("/v1/kv/" + quote(nasty, safe=""), content=b"v").status_code == 201
    env = as_env(shared)
    table = ok(kvctl("keys", "--pattern", "esc:*", config=config, env=env))
    # (the runner reads kvctl's output as latin-1: a raw override would show as its UTF-8 "\xe2...")
    assert "\xe2" not in table
    assert "esc:\\u202etxt.exe\\u2066end\\u200f" in table
    assert len(table.splitlines()) == 2  # the header and one row: no line broken by the key
    listed = kvctl_json("keys", "--pattern", "esc:*", config=config, env=env)
    # JSON writes them as \u escapes too: the same key once parsed, nothing raw on a terminal
    assert [item["key"] for item in listed["keys"]] == [nasty]
    assert "\\u202e" in ok(kvctl("del", nasty, config=config, env=env))


# -- admin commands -----------------------------------------------------------------------


def test_checkpoint_snapshots_and_status(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    assert "redo_lsn" in ok(kvctl("checkpoint", config=config, env=env))
    done = kvctl_json("checkpoint", config=config, env=env)
    assert done["snapshot"].startswith("snapshot_") and done["entries"] >= 1
    made = kvctl_json("snapshot", "create", config=config, env=env)

    listed = kvctl_json("snapshot", "list", config=config, env=env)
    current = [item["name"] for item in listed["snapshots"] if item["current"]]
    assert current == [made["snapshot"]]
    assert made["snapshot"] in ok(kvctl("snapshot", "list", config=config, env=env))

    status = kvctl_json("status", config=config, env=env)
    assert status["role"] == "primary" and status["last_checkpoint"]["snapshot"] == made["snapshot"]
    fields = dict(line.split(None, 1) for line in ok(kvctl("status", config=config, env=env)).splitlines())
    assert fields["role"] == "primary"
    assert {
        "state",
        "timeline",
        "insert_lsn",
        "write_lsn",
        "flush_lsn",
        "commit_lsn",
        "apply_lsn",
        "redo_lsn",
    } <= fields.keys()
    assert fields["last_checkpoint"].startswith(made["snapshot"])


# -- WAL ----------------------------------------------------------------------------------


def test_wal_tail_prints_records_from_an_lsn(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    ok(kvctl("set", "tail:a", "12345", config=config, env=env))
    ok(kvctl("del", "tail:a", config=config, env=env))

    lines = ok(kvctl("wal", "tail", "--no-follow", "--from", "0/0", config=config, env=env)).splitlines()
    assert any("  SET  key=tail:a version=" in line and line.endswith("bytes=5") for line in lines)
    assert any("  DEL  key=tail:a version=" in line for line in lines)

    raw = ok(kvctl("wal", "tail", "--no-follow", "--from", "0/0", "--format", "json", config=config, env=env))
    records = [json.loads(line) for line in raw.splitlines()]
    assert {"kind": "SET", "key": "tail:a", "value_bytes": 5} in [
        {name: record.get(name) for name in ("kind", "key", "value_bytes")} for record in records
    ]
    assert all({"lsn", "end_lsn", "kind"} <= record.keys() for record in records)


def test_wal_tail_follows_new_records_and_exits_0_on_ctrl_c(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    committed = kvctl_json("status", config=config, env=env)["lsn"]["commit_lsn"]
    # Started the way `make test &` starts it, SIGINT ignored; interrupted as soon as a line shows.
    tail = spawn_kvctl("wal", "tail", "--from", committed, config=config, env=env)
    try:
        lines = _line_queue(tail.stdout)
        ok(kvctl("set", "follow:a", "xyz", config=config, env=env))
        assert "  SET  key=follow:a version=" in _wait_for_line(lines, "key=follow:a")
        _interrupt_ends_quietly(tail)
    finally:
        _reap(tail)


def test_watch_prints_changes_under_a_prefix_and_exits_0_on_ctrl_c(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    ok(kvctl("set", "watch:a", "first", config=config, env=env))
    committed = kvctl_json("status", config=config, env=env)["lsn"]["commit_lsn"]
    watch = spawn_kvctl("watch", "watch:", "--from", committed, "--format", "json", config=config, env=env)
    try:
        lines = _line_queue(watch.stdout)
        ok(kvctl("set", "elsewhere", "x", config=config, env=env))
        ok(kvctl("set", "watch:b", "12345", config=config, env=env))
        event = json.loads(_wait_for_line(lines, "watch:"))
        assert (event["type"], event["key"], event["version"] > 0) == ("set", "watch:b", True)
        _interrupt_ends_quietly(watch)
    finally:
        _reap(watch)
    table = spawn_kvctl("watch", "watch:", "--from", committed, config=config, env=env)
    try:
        line = _wait_for_line(_line_queue(table.stdout), "key=watch:b")
        assert line.rstrip("\n") == f"{event['lsn']}  set  key=watch:b version={event['version']} bytes=5"
        _interrupt_ends_quietly(table)
    finally:
        _reap(table)


def test_wal_tail_exits_0_on_ctrl_c_while_a_node_keeps_it_waiting(config: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the request, never answers
        silent.settimeout(FOLLOW_TIMEOUT_S)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        tail = spawn_kvctl("wal", "tail", "--url", url, "--token", "t", config=config)
        try:
            connection, _ = silent.accept()
            with connection:
                assert _request_head(connection).startswith(b"GET /v1/admin/wal/records?")
                _interrupt_ends_quietly(tail)  # kvctl is waiting for the answer's headers
        finally:
            _reap(tail)


def _interrupt_ends_quietly(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(FOLLOW_TIMEOUT_S) == 0
    assert process.stderr is not None and process.stderr.read() == ""


def _reap(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _request_head(connection: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(4096)
        assert chunk, f"the client hung up before its request was complete: {head!r}"
        head += chunk
    return head


def test_a_reader_that_stops_reading_ends_kvctl_quietly_with_0(shared: NodeProcess, config: Path) -> None:
    env = as_env(shared)
    ok(kvctl("set", "pipe:a", "value", config=config, env=env))

    for args in (
        ["keys", "--pattern", "pipe:*"],
        ["get", "pipe:a"],
        ["status", "--format", "json"],
        ["wal", "tail", "--from", "0/0"],  # following: it would never end by itself
    ):
        assert _into_a_closed_pipe(args, config, env) == (0, ""), args


def _into_a_closed_pipe(args: list[str], config: Path, env: dict[str, str]) -> tuple[int, str]:
    """Exit status and stderr of kvctl writing into a pipe nobody reads, as after `| head` has exited."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        command = subprocess.run(
            [*KVCTL, *args],
            env=kvctl_env(config, env),
            stdin=subprocess.DEVNULL,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=KVCTL_TIMEOUT_S,
        )
    finally:
        os.close(writer)
    return command.returncode, command.stderr


def _line_queue(stream: IO[str] | None) -> queue.Queue[str]:
    assert stream is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[str], needle: str) -> str:
    while True:
        line = lines.get(timeout=FOLLOW_TIMEOUT_S)
        if needle in line:
            return line


def test_wal_inspect_and_verify_a_stopped_node(node_factory, config: Path) -> None:  # type: ignore[no-untyped-def]
    node = node_factory("offline").start()
    with node.client() as client:
        for index in range(5):
            client.put(f"/v1/kv/offline:{index}", content=b"value")
    assert node.stop() == 0
    data_dir = str(node.data_dir)

    verified = ok(kvctl("wal", "verify", "--data-dir", data_dir, config=config))
    assert verified.startswith("WAL OK: ") and "1 segment" in verified and "torn tail" not in verified
    summary = kvctl_json("wal", "verify", "--data-dir", data_dir, config=config)
    assert summary["ok"] is True and summary["records"] >= 5 and summary["torn_tail"] is None

    table = ok(kvctl("wal", "inspect", "--data-dir", data_dir, config=config))
    assert table.splitlines()[0].split()[:3] == ["LSN", "END", "LSN"]
    assert all(f"offline:{index}" in table for index in range(5))
    inspected = kvctl_json("wal", "inspect", "--data-dir", data_dir, config=config)
    sets = [record for record in inspected["records"] if record.get("key", "").startswith("offline:")]
    assert len(sets) == 5 and inspected["end_lsn"] == summary["end_lsn"]
    later = kvctl_json(
        "wal", "inspect", "--data-dir", data_dir, "--from", sets[2]["lsn"], "--limit", "2", config=config
    )
    assert [record["key"] for record in later["records"]] == ["offline:2", "offline:3"]

    wal = WalScan(node.data_dir / "WAL", wal_records.decode)
    target = next(item for item in wal if item.record[1:2] == ["offline:1"])
    segment = target.segment.path
    with open(segment, "ab") as file:
        file.write(b"\x20\x00\x00\x00torn")  # a frame header promising more bytes than follow
    torn = ok(kvctl("wal", "verify", "--data-dir", data_dir, config=config))
    assert torn.startswith("WAL OK: ") and f"torn tail at LSN {summary['end_lsn']} (8 bytes)" in torn

    _flip_byte(segment, target.lsn - target.segment.start_lsn + FRAME_HEADER_BYTES + 3)
    reason = fails(kvctl("wal", "verify", "--data-dir", data_dir, config=config))
    assert reason.startswith(f"kvctl: WAL corruption in {segment} at LSN {format_lsn(target.lsn)}: ")
    assert format_lsn(target.lsn) in fails(kvctl("wal", "inspect", "--data-dir", data_dir, config=config))
    assert "no WAL directory" in fails(kvctl("wal", "verify", "--data-dir", str(node.data_dir / "base"), config=config))


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
