"""compose/grafana/kvstore.json against real exporters: every panel query parses as PromQL and
names only metrics that a running primary, its replica or kvload export; ids and uid are unique."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest

from support.harness import MakeNode, free_port
from support.replication import make
from support.waiting import wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "compose" / "grafana" / "kvstore.json"
# The series a family of each type exports, from its TYPE line (text format 0.0.4 names a counter
# family with its _total), so a family with no sample yet (a labelled counter before its first
# event, such as kvload_errors_total) counts as exported.
SAMPLE_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "untyped": ("",),
}


def _panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def _exported(text: str) -> set[str]:
    names = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}
    for family, family_type in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.update(family + suffix for suffix in SAMPLE_SUFFIXES[family_type])
    return names


def _metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects (a selector without a name fails the test)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            named = [
                m.value for m in node.matchers.matchers if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
            ]
            name = node.name or (named[0] if named else None)
            assert name, f"{expr!r} selects series without naming a metric"
            names.add(name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


@pytest.fixture
def exported(node_factory: MakeNode, tmp_path: Path) -> Iterator[set[str]]:
    """What a primary with one streaming replica, and kvload running against them, export."""
    primary = make(node_factory, "p")
    primary.start()
    replica = make(node_factory, "r1", replica_of=primary.url)
    replica.start()
    with primary.client() as http:
        assert http.put("/v1/kv/dash:a", content=b"1").status_code == 201
    port = free_port()
    env = {
        **os.environ,
        "KVCTL_URL": primary.url,
        "KVCTL_TOKEN": primary.token(),
        "KVCTL_CONFIG": str(tmp_path / "none.json"),
        "LOAD_OPS_PER_SEC": "20",
        "METRICS_PORT": str(port),
    }
    kvload = subprocess.Popen(
        [sys.executable, "-m", "kvstore.cli.kvload"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        kvload_metrics = f"http://127.0.0.1:{port}/metrics"

        def kvload_counted() -> bool:
            try:
                return "kvload_ops_total{" in httpx.get(kvload_metrics, timeout=5).text
            except httpx.TransportError:
                return False

        wait_until(kvload_counted, 30, "kvload to serve its metrics and complete an op")
        lag = 'kvstore_replication_lag_bytes{replica="r1"}'
        wait_until(lambda: lag in httpx.get(f"{primary.url}/metrics", timeout=10).text, 30, "the replica's lag")
        texts = [httpx.get(url, timeout=10).text for url in (f"{primary.url}/metrics", f"{replica.url}/metrics")]
        texts.append(httpx.get(kvload_metrics, timeout=10).text)
        yield set().union(*map(_exported, texts))
    finally:
        kvload.terminate()
        kvload.wait(timeout=30)


def test_every_panel_query_names_exported_metrics(exported: set[str]) -> None:
    missing = []
    queries = 0
    for panel in _panels():
        for target in panel.get("targets", []):
            queries += 1
            for name in sorted(_metric_names(target["expr"]) - exported):
                missing.append(f"panel {panel['id']} ({panel['title']}): {name} in {target['expr']}")
    assert queries >= 20, queries  # the dashboard was read, not an empty one
    assert not missing, "not exported by a primary, a replica or kvload:\n" + "\n".join(missing)


def test_the_operator_panels_are_there() -> None:
    used = {name for panel in _panels() for target in panel["targets"] for name in _metric_names(target["expr"])}
    for name in (
        "kvstore_connections_active",
        "kvstore_key_count",
        "kvstore_memory_usage_bytes",
        "kvstore_wal_size_bytes",
        "kvload_ops_total",
        "kvload_errors_total",
    ):
        assert name in used, name


def test_panel_ids_and_uid_are_unique() -> None:
    ids = [panel["id"] for panel in _panels()]
    assert all(isinstance(panel_id, int) for panel_id in ids), ids
    assert len(ids) == len(set(ids)), sorted(ids)
    # Grafana keys dashboards by uid: unique among the dashboards shipped beside this one.
    uids = [json.loads(path.read_text()).get("uid") for path in sorted(DASHBOARD.parent.glob("*.json"))]
    assert all(uids) and len(uids) == len(set(uids)), uids
