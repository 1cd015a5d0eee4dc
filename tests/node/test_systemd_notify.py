"""A real kvstored under a fake service manager: the test binds the NOTIFY_SOCKET datagram
socket systemd would, and reads what the node says through its start, run and stop."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.harness import MakeNode
from support.replication import make

WATCHDOG_USEC = 200_000  # a ping every 0.1 s
SILENCE_S = 1.0  # ten ping intervals without a ping: the stopped loop sends nothing


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(60)
        yield receiver, path


def _fields(receiver: socket.socket) -> list[str]:
    return receiver.recv(4096).decode().split("\n")


def _until(receiver: socket.socket, field: str) -> list[list[str]]:
    """Every message up to and including the first one holding `field`."""
    messages = [_fields(receiver)]
    while field not in messages[-1]:
        messages.append(_fields(receiver))
    return messages


def _drain(receiver: socket.socket) -> None:
    receiver.setblocking(False)
    try:
        while True:
            receiver.recv(4096)
    except BlockingIOError:
        pass
    finally:
        receiver.settimeout(60)


def _wait_stopped(pid: int) -> None:
    """Until the kernel has stopped the process (state T in /proc): SIGSTOP is asynchronous."""
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.01)


def test_status_ready_watchdog_and_stopping(node_factory: MakeNode, notify_socket: tuple[socket.socket, Path]) -> None:
    receiver, path = notify_socket
    node = node_factory(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    process = node.spawn()

    start = _until(receiver, "READY=1")
    ready_answer = httpx.get(f"{node.url}/ready", timeout=10).status_code  # right as READY=1 came
    assert ready_answer == 200
    statuses = [field for message in start[:-1] for field in message if field.startswith("STATUS=")]
    assert "STATUS=recovering the data directory: 0 entries and records" in statuses, statuses
    assert f"STATUS=ready at {node.url} (primary)" in start[-1]

    for _ in range(5):
        assert _fields(receiver) == ["WATCHDOG=1"]

    # A stopped event loop sends no ping (systemd's watchdog would then kill the node) ...
    os.kill(process.pid, signal.SIGSTOP)
    _wait_stopped(process.pid)
    _drain(receiver)
    receiver.settimeout(SILENCE_S)
    with pytest.raises(TimeoutError):
        receiver.recv(4096)
    # ... and pings come again once it runs.
    receiver.settimeout(60)
    os.kill(process.pid, signal.SIGCONT)
    assert _fields(receiver) == ["WATCHDOG=1"]

    process.send_signal(signal.SIGTERM)
    assert ["STOPPING=1", "STATUS=stopping"] in _until(receiver, "STOPPING=1")
    assert process.wait(60) == 0


def test_no_watchdog_pings_for_another_pid(node_factory: MakeNode, notify_socket: tuple[socket.socket, Path]) -> None:
    receiver, path = notify_socket
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"}
    node = node_factory(env=env)
    node.spawn()
    start = _until(receiver, "READY=1")
    assert all("WATCHDOG=1" not in message for message in start)
    node.stop()
    assert all("WATCHDOG=1" not in message for message in _until(receiver, "STOPPING=1"))


def test_a_replica_reports_its_base_backup_and_is_ready_once_consistent(
    node_factory: MakeNode, notify_socket: tuple[socket.socket, Path]
) -> None:
    receiver, path = notify_socket
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url, NOTIFY_SOCKET=str(path))
    replica.spawn()
    start = _until(receiver, "READY=1")
    assert httpx.get(f"{replica.url}/ready", timeout=10).status_code == 200
    statuses = [field for message in start[:-1] for field in message if field.startswith("STATUS=")]
    expected = [
        "STATUS=preparing the data directory",
        f"STATUS=taking a base backup from {primary.url}: 0 bytes",
        "STATUS=recovering the data directory: 0 entries and records",
    ]
    assert [status for status in statuses if status in expected] == expected, statuses
    assert f"STATUS=ready at {replica.url} (replica)" in start[-1]
