"""Real `kvstored` processes for tests, with HTTP clients logged in as the superuser."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from kvstore.chaos.launcher import NodeLauncher, free_port

ADMIN_PASSWORD = "test-admin-password"
# Every node a test starts gets this cluster key (node/cluster_key.py), as a real cluster's
# nodes all get theirs: replicas then open the signing secrets their primary sealed.
CLUSTER_KEY = "5e" * 32
# Argon2 parameters that make a login cost the nodes next to nothing (the defaults cost ~50 ms).
CHEAP_HASHING = {
    "KVSTORE_PASSWORD_HASH_TIME_COST": "1",
    "KVSTORE_PASSWORD_HASH_MEMORY_KIB": "8192",
    "KVSTORE_PASSWORD_HASH_PARALLELISM": "1",
}

__all__ = ["ADMIN_PASSWORD", "CLUSTER_KEY", "NodeProcess", "free_port"]


class NodeProcess(NodeLauncher):
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        super().__init__(data_dir, ADMIN_PASSWORD, env=env, args=args)

    def spawn(self) -> subprocess.Popen[bytes]:
        # Here, not in __init__: tests replace extra_env between starts. KVSTORE_CLUSTER_KEY=""
        # in extra_env starts a node without it.
        self.extra_env = {"KVSTORE_CLUSTER_KEY": CLUSTER_KEY, **self.extra_env}
        return super().spawn()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {self.token()}"}, timeout=30, **kwargs
        )

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"authorization": f"Bearer {self.token()}"}, timeout=30, **kwargs
        )


# The node_factory fixture (conftest.py): makes a NodeProcess from a name, env and args.
MakeNode = Callable[..., NodeProcess]
