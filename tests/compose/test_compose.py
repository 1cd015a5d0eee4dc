"""The compose cluster end to end: `compose/cluster.sh up` builds the images with no registry
(a local Debian base image, wheels from the host) and starts p, r1 and r2; `kvctl status` then
shows one primary and two streaming replicas, a write on the primary reads back on both
replicas, and `cluster.sh down -v` removes containers and volumes.

It needs a Docker daemon (and root, as in CI, for debootstrap unless the base image exists):
30-50 s with the images built, about 3 minutes on a machine with no image. `make test-compose`
runs it (CI does, after `make test`); it refuses to touch a compose cluster that exists already
(containers or volumes of the project `kvstore`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.docker_cli import docker, why_not

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
CLUSTER_SH = COMPOSE_DIR / "cluster.sh"
ENV_FILE = COMPOSE_DIR / "kvstore.env"
PROJECT_LABEL = "label=com.docker.compose.project=kvstore"
URLS = {"p": "http://127.0.0.1:8080", "r1": "http://127.0.0.1:8081", "r2": "http://127.0.0.1:8082"}
KVCTL = Path(sys.executable).parent / "kvctl"
# A first build on a new machine includes debootstrap (about 80 s here); later ones reuse it.
UP_TIMEOUT_S = 900.0
DOWN_TIMEOUT_S = 180.0
KVCTL_TIMEOUT_S = 60.0
STREAMING_WAIT_S = 60.0
POLL_INTERVAL_S = 0.5


# Not part of `make test` (the `compose` marker is deselected there): `make test-compose` runs it,
# and .ci/run does, after the suite.
pytestmark = [pytest.mark.compose, pytest.mark.timeout(UP_TIMEOUT_S + DOWN_TIMEOUT_S + 300)]


def _existing_project_objects() -> list[str]:
    found = []
    for kind in (["ps", "--all"], ["volume", "ls"]):
        found += docker(*kind, "--quiet", "--filter", PROJECT_LABEL).stdout.split()
    return found


@pytest.fixture
def cluster() -> Iterator[None]:
    reason = why_not()
    if reason is not None:
        pytest.fail(f"the compose test cannot run here: {reason}")
    if _existing_project_objects():
        pytest.fail("a compose cluster (project kvstore) exists already; remove it (compose/cluster.sh down -v) first")
    made_env_file = not ENV_FILE.exists()
    try:
        up = subprocess.run(
            [str(CLUSTER_SH), "up"],
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT_S,
        )
        print(up.stdout, up.stderr, sep="\n")  # the build times, shown with -s or on failure
        assert up.returncode == 0, f"cluster.sh up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}"
        yield
    finally:
        down = subprocess.run([str(CLUSTER_SH), "down", "-v"], capture_output=True, text=True, timeout=DOWN_TIMEOUT_S)
        if made_env_file:
            ENV_FILE.unlink(missing_ok=True)
    assert down.returncode == 0, f"cluster.sh down -v failed:\n{down.stdout}\n{down.stderr}"
    assert _existing_project_objects() == []


def run_kvctl(*args: str, config: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KVCTL), *args],
        env={**os.environ, "KVCTL_CONFIG": str(config)},
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=KVCTL_TIMEOUT_S,
    )


def kvctl(*args: str, config: Path, stdin: str | None = None) -> str:
    result = run_kvctl(*args, config=config, stdin=stdin)
    assert result.returncode == 0, f"kvctl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
    return result.stdout


def admin_password() -> str:
    for line in ENV_FILE.read_text().splitlines():
        name, _, value = line.partition("=")
        if name == "KVSTORE_ADMIN_PASSWORD":
            return value
    raise AssertionError(f"no KVSTORE_ADMIN_PASSWORD in {ENV_FILE}")


def cluster_status(config: Path) -> dict[str, Any]:
    urls = [arg for url in URLS.values() for arg in ("--url", url)]
    document: dict[str, Any] = json.loads(kvctl("status", *urls, "--format", "json", config=config))
    return document


def roles(document: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    """(role, state) of each node, in the order of URLS; (None, None) for one that did not answer."""
    return [((node["status"] or {}).get("role"), (node["status"] or {}).get("state")) for node in document["nodes"]]


def test_compose_cluster_has_a_primary_and_two_streaming_replicas(cluster: None, tmp_path: Path) -> None:
    config = tmp_path / "kvctl.json"
    kvctl("login", "--url", URLS["p"], "--user", "admin", "--password-stdin", config=config, stdin=admin_password())
    expected = [("primary", "running"), ("replica", "streaming"), ("replica", "streaming")]
    deadline = time.monotonic() + STREAMING_WAIT_S
    document = cluster_status(config)
    while (roles(document) != expected or document["problems"]) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        document = cluster_status(config)
    assert roles(document) == expected, json.dumps(document, indent=2)
    assert document["problems"] == []
    primary = document["nodes"][0]["status"]
    assert sorted(replica["name"] for replica in primary["replicas"]) == ["r1", "r2"]

    token = json.loads(config.read_text())["token"]
    kvctl("set", "compose:greeting", "hello from p", "--url", URLS["p"], config=config)
    # r1 is synchronous (remote_apply): the acknowledged write is there at once.
    assert kvctl("get", "compose:greeting", "--url", URLS["r1"], "--token", token, config=config) == "hello from p"
    # r2 is asynchronous: it has the write once it has caught up.
    deadline = time.monotonic() + STREAMING_WAIT_S
    while True:
        result = run_kvctl("get", "compose:greeting", "--url", URLS["r2"], "--token", token, config=config)
        if result.returncode == 0 or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    assert (result.returncode, result.stdout) == (0, "hello from p"), result.stderr
