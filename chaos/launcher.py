"""Starting and stopping `kvstored` child processes on 127.0.0.1 (tests, benchmarks, local runs)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

READY_TIMEOUT_S = 60.0


# Ports handed out come from below the kernel's ephemeral range (ip_local_port_range), so no
# outgoing connection (a client's, a replica's) can take one between this check and the
# server's bind; and none is handed out twice by one process.
_PORTS_LOW = 20000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    high = _ephemeral_low() - 1
    for _ in range(1000):
        port = random.randint(_PORTS_LOW, high) if high > _PORTS_LOW else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
            port = int(probe.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 between {_PORTS_LOW} and {high}")


class NodeLauncher:
    """One kvstored child process: `start`, `stop` (SIGTERM), `kill` (SIGKILL), `restart`."""

    def __init__(
        self,
        data_dir: Path,
        admin_password: str,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.admin_password = admin_password
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.extra_args = args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self._token: str | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            "from kvstore.cli.kvstored import main; main()",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            *self.extra_args,
        ]

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "KVSTORE_ADMIN_PASSWORD": self.admin_password, **self.extra_env}
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return self.process

    def start(self) -> NodeLauncher:
        self.spawn()
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kvstored exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"kvstored not ready after {timeout_s}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def restart(self) -> NodeLauncher:
        self._token = None
        return self.start()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def token(self) -> str:
        if self._token is None:
            response = httpx.post(
                f"{self.url}/v1/auth/login", json={"username": "admin", "password": self.admin_password}, timeout=10
            )
            response.raise_for_status()
            self._token = str(response.json()["token"])
        return self._token

    def rss_bytes(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")
