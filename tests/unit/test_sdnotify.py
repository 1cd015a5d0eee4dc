"""node/sdnotify.py: the datagrams systemd's notify socket receives, on an abstract address
and on a path, and nothing at all without NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.node.sdnotify import Notifier
from kvstore.node.start_report import StartReport


@pytest.fixture
def abstract() -> Iterator[tuple[socket.socket, str]]:
    name = f"kvstore-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(10)
        yield receiver, "@" + name


def _received(receiver: socket.socket) -> str:
    return receiver.recv(4096).decode()


def test_every_message_reaches_an_abstract_socket(abstract: tuple[socket.socket, str]) -> None:
    receiver, address = abstract
    notifier = Notifier({"NOTIFY_SOCKET": address})
    notifier.status("recovering the data directory")
    notifier.extend_timeout(30)
    notifier.ready("ready at http://127.0.0.1:8080")
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    assert [_received(receiver) for _ in range(5)] == [
        "STATUS=recovering the data directory",
        "EXTEND_TIMEOUT_USEC=30000000",
        "READY=1\nSTATUS=ready at http://127.0.0.1:8080",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_a_path_socket_works_too(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(10)
        Notifier({"NOTIFY_SOCKET": str(path)}).ready("ready")
        assert _received(receiver) == "READY=1\nSTATUS=ready"


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "200000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("ready")
    notifier.watchdog()


def test_a_socket_nobody_listens_on_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready("ready")
    assert "could not notify the service manager" in caplog.text


def test_a_relative_notify_socket_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    assert not Notifier({"NOTIFY_SOCKET": "notify.sock"}).enabled
    assert "neither a path nor an abstract address" in caplog.text


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_the_watchdog_pings_every_half_watchdog_usec_for_our_pid_only(
    environ: dict[str, str], interval_s: float | None
) -> None:
    assert Notifier({"NOTIFY_SOCKET": "@kvstore-unused", **environ}).watchdog_interval_s == interval_s


def test_a_start_step_shows_its_progress() -> None:
    report = StartReport(Notifier({}))
    progress = report.step("taking a base backup from http://p:8080", unit="bytes")
    progress.total, progress.done = 1000, 250
    assert report.text() == "taking a base backup from http://p:8080: 250 of 1000 bytes"
    report.step("recovering the data directory", unit="entries and records").done = 7
    assert report.text() == "recovering the data directory: 7 entries and records"
    report.step("taking the role")
    assert report.text() == "taking the role"


class _Recorder(Notifier):
    def __init__(self) -> None:
        super().__init__({})
        self.sent: list[str] = []

    def send(self, *fields: str) -> None:
        self.sent.append("\n".join(fields))


def test_the_start_timeout_is_extended_only_while_a_counted_step_moves() -> None:
    recorder = _Recorder()
    report = StartReport(recorder)
    progress = report.step("recovering the data directory", unit="entries and records")
    report.tick(0.0)
    extensions = []
    for now, done in [(5.0, 100), (10.0, 200), (15.0, 200), (20.0, 200), (25.0, 300)]:
        progress.done = done
        report.tick(now)
        extensions.append("EXTEND_TIMEOUT_USEC=30000000" in recorder.sent)
        recorder.sent.clear()
    assert extensions == [True, True, False, False, True]  # stuck at 200: the timeout runs out


def test_a_step_with_no_count_is_extended_while_the_loop_runs() -> None:
    recorder = _Recorder()
    report = StartReport(recorder)
    report.step("restoring the data directory from the archive")
    for now in (0.0, 5.0, 10.0):
        report.tick(now)
    assert recorder.sent == [
        "STATUS=restoring the data directory from the archive",
        "EXTEND_TIMEOUT_USEC=30000000",
        "EXTEND_TIMEOUT_USEC=30000000",
    ]
