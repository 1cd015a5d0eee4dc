from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.harness import MakeNode, NodeProcess


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[MakeNode]:
    """Make kvstored processes with their own data dirs; all are killed at test end."""
    nodes: list[NodeProcess] = []

    def make(name: str = "node", env: dict[str, str] | None = None, args: list[str] | None = None) -> NodeProcess:
        node = NodeProcess(tmp_path / name, env=env, args=args)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


@pytest.fixture
def node(node_factory) -> NodeProcess:  # type: ignore[no-untyped-def]
    return node_factory().start()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A kvctl login file path in a directory that does not exist yet."""
    return tmp_path / "kvctl-home" / "config.json"
