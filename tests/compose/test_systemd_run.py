"""The node under a real systemd (issue 14): a container of the project's base image with Debian's
systemd as PID 1 and the node installed by deploy/install.sh (compose/Dockerfile.systemd), the
unit from deploy/ unchanged. `systemctl start` returns once the node sent READY=1 (and fails
when it exits first), `systemctl status` shows its STATUS line, `journalctl -u` has its log
lines, a SIGKILLed node is restarted and has every acknowledged write, a stopped event loop
(SIGSTOP) is killed by the watchdog and restarted, and exit code 4 (corruption) is not restarted.

How the container runs, and why (Docker 20.10 here, cgroup v1 hybrid, no registry):
- `-v /sys/fs/cgroup:/sys/fs/cgroup:rw --cgroupns=host`: without them systemd exits at once
  ("Failed to create /docker/ID/init.scope control group: No such file or directory", "Failed
  to allocate manager object"), Docker's cgroup mount being read-only.
- `--cap-add SYS_ADMIN --security-opt seccomp=unconfined`: the unit's sandboxing (PrivateTmp,
  ProtectSystem, PrivateIPC, ProtectHostname, ...) makes namespaces; with Docker's default caps
  and seccomp profile systemd skips part of it ("IPC namespace setup failed, ignoring"), so the
  hardening would not be the one tested. `--privileged` is not possible on this machine: the
  daemon lacks CAP_SYS_RESOURCE, and runc fails with "unable to apply caps: operation not
  permitted".

It needs a Docker daemon (and root for debootstrap unless kvstore-base:bookworm exists) and takes
about 2-3 minutes, most of it the image build (apt-get install systemd, the wheels); `make
test-compose` runs it. The container and the image are removed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.docker_cli import why_not
from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
BASE_IMAGE = "kvstore-base:bookworm"
UNIT = "kvstore-plus-plus"
DATA_DIR = "/var/lib/kvstore-plus-plus"
ADMIN_PASSWORD = "systemd-run-admin-password"
KEYS = 50
BUILD_TIMEOUT_S = 900.0
COMMAND_TIMEOUT_S = 120.0
BOOT_WAIT_S = 60.0
# The watchdog fires 10 s (WatchdogSec) after the last ping, the restart follows 2 s later.
RESTART_WAIT_S = 90.0
HTTP_TIMEOUT_S = 10.0

pytestmark = [pytest.mark.compose, pytest.mark.timeout(BUILD_TIMEOUT_S + 600)]


def _run(
    *command: str | Path, timeout_s: float = COMMAND_TIMEOUT_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout_s, env=env)


def _checked(*command: str | Path, timeout_s: float = COMMAND_TIMEOUT_S, env: dict[str, str] | None = None) -> str:
    done = _run(*command, timeout_s=timeout_s, env=env)
    assert done.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


@dataclass(frozen=True)
class Machine:
    """The running container: commands inside it, and the node's published HTTP port."""

    name: str
    url: str

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return _run("docker", "exec", self.name, *command)

    def checked(self, *command: str) -> str:
        return _checked("docker", "exec", self.name, *command)

    def unit(self) -> dict[str, str]:
        """The unit's state as `systemctl show` reports it."""
        names = "ActiveState,SubState,MainPID,NRestarts,ExecMainStatus,Result"
        shown = self.checked("systemctl", "show", UNIT, f"--property={names}")
        return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.checked("journalctl", "--unit", UNIT, "--no-pager", "--output", "cat")


def _image(tag: str, context: Path) -> None:
    """compose/Dockerfile.systemd built from the project's wheels and deploy/."""
    if _run("docker", "image", "inspect", BASE_IMAGE).returncode != 0:
        _checked(COMPOSE_DIR / "base-image.sh", BASE_IMAGE, timeout_s=BUILD_TIMEOUT_S)
    wheel_env = {**os.environ, "PYTHON": sys.executable}  # a CPython 3.11 with pip, as the image's
    _checked(COMPOSE_DIR / "cluster.sh", "wheelhouse", timeout_s=BUILD_TIMEOUT_S, env=wheel_env)
    shutil.copytree(COMPOSE_DIR / "wheelhouse", context / "wheelhouse")
    shutil.copytree(ROOT / "deploy", context / "deploy")
    _checked(
        "docker", "build", "--quiet", "--file", COMPOSE_DIR / "Dockerfile.systemd",
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--tag", tag, context,
        timeout_s=BUILD_TIMEOUT_S,
    )  # fmt: skip


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    reason = why_not()
    if reason is not None:
        pytest.fail(f"the systemd run cannot run here: {reason}")
    name = f"kvstore-systemd-{uuid.uuid4().hex[:12]}"
    tag = f"{name}:test"
    try:
        _image(tag, tmp_path / "context")
        _checked(
            "docker", "run", "--detach", "--name", name,
            "--cgroupns=host", "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
            "--publish", "127.0.0.1::8080", tag,
        )  # fmt: skip
        host_port = _checked("docker", "port", name, "8080/tcp").split()[0]
        machine = Machine(name, f"http://{host_port}")
        # "degraded" would do too (a unit the container cannot run); the node's is what counts.
        wait_until(
            lambda: machine.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded"),
            BOOT_WAIT_S,
            "systemd to finish booting",
        )
        yield machine
    finally:
        removed = [_run("docker", "rm", "--force", "--volumes", name), _run("docker", "image", "rm", "--force", tag)]
    for done in removed:
        assert done.returncode == 0 or "No such" in done.stderr, done.stderr


def _login(machine: Machine) -> httpx.Client:
    answer = httpx.post(
        f"{machine.url}/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=HTTP_TIMEOUT_S
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["token"]
    return httpx.Client(base_url=machine.url, headers={"authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_S)


def _restarted(machine: Machine, restarts: int, old_pid: str) -> bool:
    unit = machine.unit()
    if (unit["NRestarts"], unit["ActiveState"], unit["SubState"]) != (str(restarts), "active", "running"):
        return False
    return unit["MainPID"] != old_pid and httpx.get(f"{machine.url}/ready", timeout=HTTP_TIMEOUT_S).status_code == 200


def _all_keys_read_back(client: httpx.Client) -> None:
    for index in range(KEYS):
        answer = client.get(f"/v1/kv/systemd:{index}")
        assert (answer.status_code, answer.content) == (200, f"value {index}".encode()), (index, answer.text)


def test_node_under_systemd_as_pid_1(machine: Machine) -> None:
    # The superuser's password in the secrets file the install made (EnvironmentFile=).
    machine.checked("sh", "-c", f"echo KVSTORE_ADMIN_PASSWORD={ADMIN_PASSWORD} >>/etc/kvstore-plus-plus/kvstore.env")

    # Type=notify: `systemctl start` waits for READY=1, which comes once /ready answers 200.
    machine.checked("systemctl", "start", UNIT)
    assert httpx.get(f"{machine.url}/ready", timeout=HTTP_TIMEOUT_S).status_code == 200
    unit = machine.unit()
    assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), unit
    journal = machine.journal()
    ready_line = next(line for line in journal.splitlines() if '"msg":"ready"' in line)
    assert journal.index(ready_line) < journal.index("Started kvstore-plus-plus.service"), journal
    status = _run("docker", "exec", machine.name, "systemctl", "status", UNIT, "--no-pager").stdout
    assert 'Status: "ready at http://0.0.0.0:8080 (primary)"' in status, status
    # journalctl -u has the node's own JSON lines, recovery and bootstrap included.
    assert '"msg":"recovery complete"' in journal and '"msg":"catalog bootstrapped"' in journal, journal

    # fsync = "always": each write is on disk when acknowledged.
    with _login(machine) as client:
        for index in range(KEYS):
            answer = client.put(f"/v1/kv/systemd:{index}", content=f"value {index}".encode())
            assert answer.status_code in (200, 201), answer.text

    # SIGKILL: Restart=on-failure starts it again, and recovery replays every acknowledged write.
    killed_pid = unit["MainPID"]
    machine.checked("systemctl", "kill", "--signal=SIGKILL", UNIT)
    wait_until(lambda: _restarted(machine, 1, killed_pid), RESTART_WAIT_S, "the restart after SIGKILL")
    assert "Main process exited, code=killed, status=9/KILL" in machine.journal()
    with _login(machine) as client:
        _all_keys_read_back(client)

    # SIGSTOP: the event loop sends no WATCHDOG=1, so after WatchdogSec systemd aborts the node
    # (SIGABRT, then SIGCONT so that a stopped process gets it) and restarts it.
    stopped_pid = machine.unit()["MainPID"]
    machine.checked("systemctl", "kill", "--signal=SIGSTOP", UNIT)
    wait_until(lambda: _restarted(machine, 2, stopped_pid), RESTART_WAIT_S, "the watchdog's restart after SIGSTOP")
    journal = machine.journal()
    assert "Watchdog timeout" in journal and "Failed with result 'watchdog'" in journal, journal
    with _login(machine) as client:
        _all_keys_read_back(client)

    # Exit 4 (a damaged control file): the start fails, as READY=1 never came, and the unit stays
    # failed: a pending restart would show as SubState=auto-restart instead.
    machine.checked("systemctl", "stop", UNIT)
    machine.checked("sh", "-c", f"echo '{{damaged' >{DATA_DIR}/control")
    start = machine.run("systemctl", "start", UNIT)
    assert start.returncode != 0, start.stdout
    unit = machine.unit()
    assert (unit["ActiveState"], unit["SubState"], unit["ExecMainStatus"]) == ("failed", "failed", "4"), unit
    assert unit["NRestarts"] == "0", unit
    assert "refusing to start" in machine.journal()
