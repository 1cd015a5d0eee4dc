"""The `docker` backend: the compose cluster (compose/docker-compose.yml) under fault.

Compose starts and removes the cluster, as an operator's `make compose-up` does, under a
project of its own (`kvchaos`, never the operator's `kvstore`), with the run's passwords,
free ports on 127.0.0.1 and an override file for the scenario's settings. The faults go
through the docker SDK: kill (SIGKILL), start, pause (the cgroup freezer: SIGSTOP for the
whole container), and taking a node off the `cluster` network, which carries all
node-to-node traffic while clients keep reaching the node on its published port.
WAL damage is done by a throwaway container of the same image that mounts the stopped
node's volume and runs `python3 -m kvstore.chaos.waldamage`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import httpx
from docker.models.containers import Container

from .backend import ADMIN_USER, NODE_NAMES, PRIMARY, Backend, ClusterSpec, Corruption, NodeStartFailed, WalDamage
from .client import NodeClient, NodeClients
from .launcher import free_port

COMPOSE_DIR = Path(__file__).resolve().parent.parent / "compose"
PROJECT = "kvchaos"
IMAGE = "kvstore:latest"
CLUSTER_NETWORK = "cluster"  # the compose file's node-to-node network
NODE_PORT = 8080  # inside the containers
BUILD_TIMEOUT_S = 900.0  # the first build on a machine includes debootstrap
COMPOSE_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.1


class DockerBackend(Backend):
    name = "docker"

    @classmethod
    def prepare(cls) -> None:
        """Build the images from this checkout (cached layers make a rebuild take seconds)."""
        try:
            docker.from_env().ping()
        except docker.errors.DockerException as error:
            raise RuntimeError(f"no Docker daemon answers: {error}") from None
        _compose_command()  # fail early, with the reason, where there is no compose
        build = subprocess.run(
            [str(COMPOSE_DIR / "cluster.sh"), "build"],
            env={**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        if build.returncode != 0:
            raise RuntimeError(f"compose/cluster.sh build failed ({build.returncode}):\n{build.stdout}{build.stderr}")

    def __init__(self, root: Path) -> None:
        super().__init__(root.absolute())  # compose reads the files it names relative to compose/
        self._docker = docker.from_env()
        self._password = secrets.token_urlsafe(18)
        self._clients = NodeClients(ADMIN_USER, self._password)
        self._ports: dict[str, int] = {}
        self._containers: dict[str, Container] = {}
        self._compose_env: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------

    def start(self, spec: ClusterSpec) -> None:
        if spec.primary != PRIMARY or not set(spec.nodes) <= set(NODE_NAMES):
            raise ValueError(f"the compose cluster has the primary p and the replicas r1, r2; not {spec.nodes}")
        self.root.mkdir(parents=True, exist_ok=True)
        self._ports = {node: free_port() for node in spec.nodes}
        self._compose_env = {
            **os.environ,
            "KVSTORE_ENV_FILE": str(self._write_env_file()),
            **{f"KVSTORE_PORT_{node.upper()}": str(port) for node, port in self._ports.items()},
        }
        self._compose("down", "--volumes", "--timeout", "0")  # what a broken earlier run left
        override = self.root / "compose.override.yml"
        override.write_text(json.dumps(_override(spec), indent=2))  # JSON is YAML
        self._compose("up", "--detach", "--no-build", *spec.nodes, override=override)
        self._containers = {node: self._container(node) for node in spec.nodes}
        for node in spec.nodes:
            self._wait_ready(node)

    def stop(self) -> None:
        for node in self._containers:  # their logs go with them: keep a copy beside the report
            with contextlib.suppress(docker.errors.APIError):
                (self.root / f"{node}.log").write_text(self.log(node))
        if self._compose_env:
            self._compose("down", "--volumes", "--timeout", "0")
        self._containers = {}

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self._ports[node]}"

    def credentials(self) -> tuple[str, str]:
        return ADMIN_USER, self._password

    # -- faults --------------------------------------------------------------------

    def kill(self, node: str) -> None:
        self._containers[node].kill()  # SIGKILL to tini, PID 1: the kernel kills the rest

    def restart(self, node: str) -> None:
        logged = len(self.log(node))
        self._containers[node].start()
        try:
            self._wait_ready(node)
        except NodeExited as exited:
            raise NodeStartFailed(node, exited.exit_code, self.log(node)[logged:]) from None

    def pause(self, node: str) -> None:
        self._containers[node].pause()

    def resume(self, node: str) -> None:
        self._containers[node].unpause()

    def isolate(self, node: str) -> None:
        self._cluster_network().disconnect(self._containers[node])

    def heal(self, node: str) -> None:
        self._cluster_network().connect(self._containers[node], aliases=[_alias(node)])

    def promote(self, node: str) -> dict[str, Any]:
        return NodeClient(self.url(node), self._clients).promote()

    def rejoin(self, node: str, primary: str) -> dict[str, Any]:
        return NodeClient(self.url(node), self._clients).rejoin_and_wait(f"http://{_alias(primary)}:{NODE_PORT}")

    def corrupt_wal(self, node: str, kind: Corruption) -> WalDamage:
        return WalDamage.from_json(json.loads(self._waldamage(node, "corrupt", str(kind))))

    def repair_wal(self, node: str, damage: WalDamage) -> None:
        self._waldamage(node, "undo", json.dumps(damage.to_json()))

    def log(self, node: str) -> str:
        # A container keeps one log across its restarts.
        return bytes(self._containers[node].logs()).decode(errors="replace")

    # -- helpers -------------------------------------------------------------------

    def _write_env_file(self) -> Path:
        path = self.root / "kvchaos.env"
        path.touch(mode=0o600)
        path.write_text(
            f"KVSTORE_ADMIN_PASSWORD={self._password}\n"
            "KVSTORE_REPLICATION_USER=replicator\n"
            f"KVSTORE_REPLICATION_PASSWORD={secrets.token_urlsafe(18)}\n"
            # One key for the whole cluster: the replicas open the signing secrets the primary sealed.
            f"KVSTORE_CLUSTER_KEY={secrets.token_hex(32)}\n"
        )
        return path

    def _compose(self, *args: str, override: Path | None = None) -> None:
        files = ["--file", str(COMPOSE_DIR / "docker-compose.yml")]
        if override is not None:
            files += ["--file", str(override)]
        command = [*_compose_command(), "--project-name", PROJECT, "--project-directory", str(COMPOSE_DIR), *files]
        done = subprocess.run(
            [*command, *args], env=self._compose_env, capture_output=True, text=True, timeout=COMPOSE_TIMEOUT_S
        )
        if done.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")

    def _container(self, node: str) -> Container:
        labels = [f"com.docker.compose.project={PROJECT}", f"com.docker.compose.service={node}"]
        (container,) = self._docker.containers.list(all=True, filters={"label": labels})
        return container

    def _cluster_network(self) -> Any:
        (network,) = self._docker.networks.list(
            filters={
                "label": [f"com.docker.compose.project={PROJECT}", f"com.docker.compose.network={CLUSTER_NETWORK}"]
            }
        )
        return network

    def _wait_ready(self, node: str) -> None:
        """Until GET /ready answers 200 on the published port; `NodeExited` if the container stops."""
        container = self._containers[node]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url(node)}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:  # not listening yet; docker's port proxy may reset the connection
                pass
            container.reload()
            if container.status == "exited":
                raise NodeExited(int(container.attrs["State"]["ExitCode"]))
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"{node} was not ready within {READY_TIMEOUT_S:g} s")

    def _waldamage(self, node: str, *args: str) -> str:
        """Run waldamage in a container of the node's image on its (stopped) data volume."""
        container = self._containers[node]
        container.reload()
        if container.status == "running":
            raise RuntimeError(f"{node} is running; its WAL can only be damaged while it is stopped")
        (volume,) = (mount["Name"] for mount in container.attrs["Mounts"] if mount["Destination"] == "/data")
        output = self._docker.containers.run(
            IMAGE,
            ["-m", "kvstore.chaos.waldamage", args[0], "/data", *args[1:]],
            entrypoint="python3",
            volumes={volume: {"bind": "/data", "mode": "rw"}},
            network_disabled=True,
            remove=True,
        )
        return bytes(output).decode()


class NodeExited(Exception):
    def __init__(self, exit_code: int) -> None:
        super().__init__(f"exited with {exit_code}")
        self.exit_code = exit_code


def _override(spec: ClusterSpec) -> dict[str, Any]:
    """The scenario's settings over the compose file's: fsync always everywhere; the primary
    synchronous only when the spec says so (the file makes r1 synchronous)."""
    primary: dict[str, str] = {"KVSTORE_SYNCHRONOUS_COMMIT": "local", "KVSTORE_SYNCHRONOUS_REPLICAS": ""}
    if spec.synchronous_replica:
        primary = {
            "KVSTORE_SYNCHRONOUS_COMMIT": "remote_apply",
            "KVSTORE_SYNCHRONOUS_REPLICAS": f"ANY 1 ({spec.synchronous_replica})",
            "KVSTORE_SYNCHRONOUS_COMMIT_TIMEOUT_S": "0",  # as the process backend: wait as long as it takes
        }
    # Settings such as the clients' cheap password hashing come from this process's environment,
    # as the process backend's nodes inherit it.
    inherited = {name: value for name, value in os.environ.items() if name.startswith("KVSTORE_PASSWORD_HASH_")}
    common = {"KVSTORE_FSYNC": "always", **inherited, **spec.settings}
    services = {node: {"environment": {**(primary if node == spec.primary else {}), **common}} for node in spec.nodes}
    return {"services": services}


def _alias(node: str) -> str:
    return f"{node}.{CLUSTER_NETWORK}"


@functools.cache
def _compose_command() -> tuple[str, ...]:
    """Compose v2 where it is installed, else Debian's docker-compose 1.29 (as cluster.sh);
    asked once per process, not before every compose call."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise RuntimeError("neither `docker compose` nor `docker-compose` is installed")
