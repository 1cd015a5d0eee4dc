"""The Docker daemon the compose tests need: the `docker` command, and whether it can run them."""

from __future__ import annotations

import os
import shutil
import subprocess

DOCKER_TIMEOUT_S = 30.0


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S)


def why_not() -> str | None:
    """Why this machine cannot run the compose tests, or None."""
    if shutil.which("docker") is None or docker("info").returncode != 0:
        return "no Docker daemon answers"
    if os.geteuid() != 0 and docker("image", "inspect", "kvstore-base:bookworm").returncode != 0:
        return "building the base image (debootstrap) needs root"
    return None
