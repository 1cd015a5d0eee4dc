"""The `process` backend: every node a kvstored child process on 127.0.0.1.

Node-to-node traffic goes through one LinkProxy per ordered pair of nodes: a replica's
`KVSTORE_REPLICA_OF` and every `--peers` URL point at the proxy for that link, so a partition
cuts exactly the links between two nodes while the clients still reach both directly.
Data directories and logs live under the run's directory (`<node>/`, `<node>.log`). The
nodes inherit this process's environment, so any KVSTORE_* setting set there applies to all.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path
from typing import Any

from . import waldamage
from .backend import ADMIN_USER, Backend, ClusterSpec, Corruption, NodeStartFailed, WalDamage
from .client import NodeClient, NodeClients
from .launcher import NodeLauncher
from .proxy import LinkProxy

REPLICATION_USER = "replicator"


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._password = secrets.token_urlsafe(18)
        self._clients = NodeClients(ADMIN_USER, self._password)
        self._nodes: dict[str, NodeLauncher] = {}
        self._links: dict[tuple[str, str], LinkProxy] = {}  # (from, to) -> the proxy `from` dials

    @classmethod
    def prepare(cls) -> None:
        """Nothing to build: the nodes run this checkout's kvstored."""

    def start(self, spec: ClusterSpec) -> None:
        env = {
            "KVSTORE_FSYNC": "always",
            "KVSTORE_REPLICATION_USER": REPLICATION_USER,
            "KVSTORE_REPLICATION_PASSWORD": secrets.token_urlsafe(18),
            # One key for the whole cluster: the replicas open the signing secrets the primary sealed.
            "KVSTORE_CLUSTER_KEY": secrets.token_hex(32),
            **spec.settings,
        }
        for name in spec.nodes:
            self._nodes[name] = NodeLauncher(self.root / name, self._password, env=dict(env))
        for source in spec.nodes:
            for target in spec.nodes:
                if source != target:
                    self._links[source, target] = LinkProxy(self._nodes[target].port)
        for name, node in self._nodes.items():
            peers = ",".join(self._links[name, other].url for other in spec.nodes if other != name)
            node.extra_args = ["--name", name, "--peers", peers]
            if name != spec.primary:  # a default that control outranks after a failover, as in compose
                node.extra_env["KVSTORE_REPLICA_OF"] = self._links[name, spec.primary].url
        if spec.synchronous_replica:
            self._nodes[spec.primary].extra_env |= {
                "KVSTORE_SYNCHRONOUS_COMMIT": "remote_apply",
                "KVSTORE_SYNCHRONOUS_REPLICAS": f"ANY 1 ({spec.synchronous_replica})",
            }
        # All at once: the replicas retry their primary until it is up, then take their base backups.
        for node in self._nodes.values():
            node.spawn()
        for node in self._nodes.values():
            node.wait_ready()

    def stop(self) -> None:
        for node in self._nodes.values():
            node.close()  # SIGKILL: the run is over, a final checkpoint would only cost time
        for link in self._links.values():
            link.close()

    def url(self, node: str) -> str:
        return self._nodes[node].url

    def credentials(self) -> tuple[str, str]:
        return ADMIN_USER, self._password

    def kill(self, node: str) -> None:
        self._nodes[node].kill()

    def restart(self, node: str) -> None:
        launcher = self._nodes[node]
        logged = len(launcher.log())
        launcher.spawn()
        try:
            launcher.wait_ready()
        except RuntimeError:  # it exited
            assert launcher.process is not None
            raise NodeStartFailed(node, launcher.process.returncode, launcher.log()[logged:]) from None

    def pause(self, node: str) -> None:
        os.kill(self._pid(node), signal.SIGSTOP)

    def resume(self, node: str) -> None:
        os.kill(self._pid(node), signal.SIGCONT)

    def isolate(self, node: str) -> None:
        for link in self._links_of(node):
            link.cut()

    def heal(self, node: str) -> None:
        for link in self._links_of(node):
            link.mend()

    def promote(self, node: str) -> dict[str, Any]:
        return NodeClient(self.url(node), self._clients).promote()

    def rejoin(self, node: str, primary: str) -> dict[str, Any]:
        return NodeClient(self.url(node), self._clients).rejoin_and_wait(self._links[node, primary].url)

    def corrupt_wal(self, node: str, kind: Corruption) -> WalDamage:
        return waldamage.corrupt(self._nodes[node].data_dir, kind)

    def repair_wal(self, node: str, damage: WalDamage) -> None:
        waldamage.undo(damage, self._nodes[node].data_dir)

    def log(self, node: str) -> str:
        return self._nodes[node].log()

    def _links_of(self, node: str) -> list[LinkProxy]:
        return [link for (source, target), link in self._links.items() if node in (source, target)]

    def _pid(self, node: str) -> int:
        process = self._nodes[node].process
        assert process is not None and process.poll() is None, f"{node} is not running"
        return process.pid
