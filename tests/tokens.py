"""The token signing secrets of a test node, opened with the harness's cluster key: for tests
that forge tokens on purpose (nothing else can read them: they are sealed in the catalog)."""

from __future__ import annotations

import json

from harness import CLUSTER_KEY, NodeProcess
from kvstore.node import cluster_key, signing_keys


def signing_secret(node: NodeProcess, kid: str) -> str:
    with node.client() as admin:
        document = json.loads(admin.get("/v1/kv/_sys.settings:jwt_keys").content)
    opened = signing_keys.open_secrets(document, cluster_key.ClusterKey(cluster_key.parse(CLUSTER_KEY, "test")))
    return opened[kid]
