"""The docker backend's smoke run: `kvchaos run --backend docker --scenario promote` against
the compose cluster (compose project `kvchaos`): SIGKILL the primary's container, promote the
synchronous replica, start the old primary (it must come back fenced) and rejoin it, with
every checker passing. Then a partition through the `cluster` network, which clients must
still get around.

Marker `compose` (needs a Docker daemon; `make test-compose` runs it, as CI does after
`make test`). About 1 minute per scenario with the images built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.docker_cli import docker, why_not
from support.harness import CHEAP_HASHING

KVCHAOS = Path(sys.executable).parent / "kvchaos"
DURATION_S = 10
RUN_TIMEOUT_S = 900.0
pytestmark = [pytest.mark.compose, pytest.mark.timeout(2 * RUN_TIMEOUT_S)]


def kvchaos_run(scenario: str, workdir: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run one scenario from `workdir` with a relative --report, as `make chaos-docker` does."""
    arguments = ["run", "--backend", "docker", "--scenario", scenario, "--duration", str(DURATION_S), "--seed", "3"]
    done = subprocess.run(
        [str(KVCHAOS), *arguments, "--report", "report"],
        cwd=workdir,
        env={**os.environ, **CHEAP_HASHING},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    report = workdir / "report" / "report.json"
    assert report.exists(), f"no report ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done, json.loads(report.read_text())


@pytest.mark.parametrize("scenario", ["promote", "partition"])
def test_docker_backend_scenario_passes(scenario: str, tmp_path: Path) -> None:
    reason = why_not()
    if reason is not None:
        pytest.fail(f"the docker backend cannot run here: {reason}")
    done, report = kvchaos_run(scenario, tmp_path)
    (run,) = report["runs"]
    failed = [checker for checker in run["checkers"] if not checker["passed"]]
    assert done.returncode == 0 and report["passed"], (done.stdout, done.stderr, run["error"], failed)
    assert run["backend"] == "docker" and run["lost_write_count"] == 0 and run["ops"]["acknowledged"] > 100
    kinds = [fault["kind"] for fault in run["faults"]]
    if scenario == "promote":
        assert kinds[:2] == ["kill", "promote"] and "rejoin" in kinds and run["promotion_s"]
        assert {checker["name"]: checker["passed"] for checker in run["checkers"]}["fenced"]
    else:
        assert kinds == ["partition"]
    # The nodes' logs are kept beside the report; the project's containers and volumes are gone.
    assert {path.name for path in (tmp_path / "report" / "nodes" / scenario).glob("*.log")} >= {"p.log", "r1.log"}
    left = docker("ps", "--all", "--quiet", "--filter", "label=com.docker.compose.project=kvchaos").stdout.split()
    left += docker("volume", "ls", "--quiet", "--filter", "label=com.docker.compose.project=kvchaos").stdout.split()
    assert left == []
