"""`/metrics` of a real node: Prometheus' own format check, and every declared metric exported.

The names come from `kvstore.node.metrics` (imported here only to learn what is
declared); the samples come from the running node's `/metrics`, so a metric that is
declared but never registered, or registered but never fed, is caught.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.metrics import MetricWrapperBase

import kvstore.node.metrics as node_metrics
from support.harness import NodeProcess
from support.waiting import wait_until

PROMTOOL = "promtool"
KEY_COUNT_LINT = 'kvstore_key_count non-histogram and non-summary metrics should not have "_count" suffix'
# What a family of each type exports as samples (text format 0.0.4).
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


@pytest.fixture(scope="module")
def metrics_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(
        tmp_path_factory.mktemp("metrics") / "node",
        env={"KVSTORE_MAX_VALUE_BYTES": "1024", "KVSTORE_MAX_BODY_BYTES": "4096", "KVSTORE_EXPIRE_INTERVAL_MS": "50"},
    )
    try:
        node.start()
        _traffic(node)
        yield node
    finally:
        node.close()


def _traffic(node: NodeProcess) -> None:
    """Touch every subsystem once: data ops, a transaction, a checkpoint, expiry, refusals."""
    with node.client() as http:
        assert http.put("/v1/kv/m:a", content=b"1").status_code == 201
        assert http.put("/v1/kv/m:a", content=b"2").status_code == 200
        assert http.get("/v1/kv/m:a").status_code == 200
        assert http.get("/v1/kv/m:missing").status_code == 404
        assert http.post("/v1/kv/m:n/incr", params={"by": 5}).status_code == 200
        assert http.delete("/v1/kv/m:a").status_code == 204
        txn = {"ops": [{"op": "set", "key": "m:t", "value": "x"}, {"op": "del", "key": "m:n"}]}
        assert http.post("/v1/txn", json=txn).status_code == 200
        assert http.get("/v1/kv", params={"prefix": "m:"}).status_code == 200
        assert http.post("/v1/admin/checkpoint").status_code == 200
        assert http.put("/v1/kv/m:ttl", params={"ttl": 1}, content=b"x").status_code == 201
        assert http.put("/v1/kv/m:big", content=b"x" * 2048).status_code == 413  # kvstore_http_rejected_total
    with httpx.Client(base_url=node.url, timeout=30) as anonymous:
        assert anonymous.get("/v1/kv/m:t").status_code == 401  # kvstore_auth_failures_total
        assert anonymous.post("/v1/auth/login", json={"username": "nobody", "password": "x"}).status_code == 401
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the expirer to log the DEL of m:ttl
            if _sample(anonymous.get("/metrics").text, "kvstore_ttl_expired_keys_total") >= 1:
                break
            time.sleep(0.1)


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


@pytest.fixture(scope="module")
def exposition(metrics_node: NodeProcess) -> str:
    response = httpx.get(f"{metrics_node.url}/metrics", timeout=30)  # no credentials: Prometheus has none
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def declared_metrics() -> dict[str, str]:
    """{family name: family type} for every metric object and our own collector in kvstore.node.metrics."""
    declared = {}
    for value in vars(node_metrics).values():
        if isinstance(value, MetricWrapperBase):
            declared[value._name] = value._type
        elif isinstance(
            value, (node_metrics.OperationStats, node_metrics.CounterFunction, node_metrics.ConnectionsActive)
        ):
            declared.update((family.name, family.type) for family in value.describe())
    return declared


def test_promtool_accepts_the_exposition(exposition: str) -> None:
    promtool = shutil.which(PROMTOOL)
    if promtool is None:
        pytest.fail(
            "promtool is not installed: this test needs Prometheus' own format checker "
            "(Debian/Ubuntu: `apt-get install prometheus`, which ships /usr/bin/promtool)"
        )
    # `check metrics` parses the text format and lints it (naming, units, counters ending
    # in _total, HELP present); this promtool has no --lint flag and exits non-zero on a
    # lint problem, so passing here means both the format and the lint are clean.
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=exposition.encode(), capture_output=True, timeout=60, check=False
    )
    report = (checked.stdout + checked.stderr).decode(errors="replace")
    # One lint finding is known and kept: the design's name kvstore_key_count ends in _count,
    # which Prometheus reserves for histograms and summaries (kvstore_store_keys is the same
    # value under a clean name). Exit 3 is "lint problems only"; a parse error exits 1.
    findings = [line for line in report.splitlines() if line.strip()]
    assert findings in ([], [KEY_COUNT_LINT]), f"promtool check metrics failed ({checked.returncode}):\n{report}"
    assert checked.returncode == (3 if findings else 0), report


def test_every_declared_metric_is_exported(exposition: str) -> None:
    declared = declared_metrics()
    assert len(declared) >= 10, declared  # the module was read, not an empty or renamed one
    assert "kvstore_kv_operations" in declared and "kvstore_wal_fsync_seconds" in declared
    samples = [line for line in exposition.splitlines() if line and not line.startswith("#")]
    sample_names = {line.split("{", 1)[0].split(" ", 1)[0] for line in samples}
    missing = []
    for name, family_type in sorted(declared.items()):
        assert name.startswith("kvstore_"), f"{name} does not follow kvstore_<subsystem>_<what>_<unit>"
        for suffix in SAMPLE_SUFFIXES[family_type]:
            if name + suffix not in sample_names:
                missing.append(f"{name} ({family_type}): no {name + suffix} sample")
    assert not missing, "declared in node/metrics.py but not on /metrics:\n" + "\n".join(missing)


def test_traffic_is_counted(exposition: str) -> None:
    """The labels the traffic above must have produced, so the metrics measure what they claim."""
    for op in ("get", "put", "delete", "incr", "txn"):
        assert f'kvstore_kv_operations_total{{op="{op}",result="ok"}}' in exposition, op
        assert re.search(rf'^kvstore_kv_operation_seconds_count{{op="{op}"}} [1-9]', exposition, re.MULTILINE), op
    assert 'kvstore_kv_operations_total{op="get",result="404"} 1.0' in exposition
    assert re.search(r'^kvstore_checkpoints_total\{result="ok"\} [1-9]', exposition, re.MULTILINE)
    assert re.search(r"^kvstore_checkpoint_seconds_count [1-9]", exposition, re.MULTILINE)
    assert re.search(r'^kvstore_http_rejected_total\{reason="body_too_large"\} 1\.0$', exposition, re.MULTILINE)
    assert re.search(r'^kvstore_auth_failures_total\{reason="missing"\} 1\.0$', exposition, re.MULTILINE)
    assert re.search(r'^kvstore_auth_failures_total\{reason="bad_credentials"\} 1\.0$', exposition, re.MULTILINE)
    assert _sample(exposition, "kvstore_ttl_expired_keys_total") >= 1
    assert _sample(exposition, "kvstore_wal_written_bytes_total") > 0
    assert _sample(exposition, "kvstore_wal_fsync_seconds_count") > 0
    assert _sample(exposition, "kvstore_store_keys") > 0
    assert _sample(exposition, "kvstore_wal_end_lsn_bytes") > 0


def _labelled(text: str, name: str, label: str) -> dict[str, float]:
    """{label value: sample} of the family `name` labelled by `label` alone."""
    pattern = rf'^{re.escape(name)}\{{{label}="([^"]*)"\}} (\S+)$'
    return {value: float(sample) for value, sample in re.findall(pattern, text, re.MULTILINE)}


def test_the_designs_operator_metrics_are_exported(exposition: str) -> None:
    """The four names of the original design, fed with real values."""
    assert _sample(exposition, "kvstore_key_count") > 0
    assert _sample(exposition, "kvstore_key_count") == _sample(exposition, "kvstore_store_keys")  # the alias
    memory = _labelled(exposition, "kvstore_memory_usage_bytes", "kind")
    assert set(memory) == {"store_estimate", "rss"}, memory
    assert 0 < memory["store_estimate"] < memory["rss"], memory
    assert "anonymous" in _labelled(exposition, "kvstore_connections_active", "role")
    assert _sample(exposition, "kvstore_wal_size_bytes") > 0
    assert 0 < _sample(exposition, "kvstore_wal_disk_free_bytes") <= _sample(exposition, "kvstore_wal_disk_size_bytes")


def test_connections_are_counted_by_role_while_open(metrics_node: NodeProcess) -> None:
    """A keep-alive connection that sent an authenticated request counts under the admin's roles
    until it closes; a connection that sent nothing counts as anonymous."""

    def connections() -> dict[str, float]:
        scrape = httpx.get(f"{metrics_node.url}/metrics", timeout=30)  # itself an anonymous connection
        return _labelled(scrape.text, "kvstore_connections_active", "role")

    before = connections()
    with metrics_node.client() as admin, socket.create_connection(("127.0.0.1", metrics_node.port)):
        assert admin.get("/v1/status").status_code == 200
        roles = admin.get("/v1/admin/users/admin").json()["roles"]
        label = ",".join(sorted(roles))
        during = connections()
        assert during.get(label, 0) == before.get(label, 0) + 1, (label, before, during)
        assert during["anonymous"] >= 2, during  # the silent socket and the scrape's own connection
    wait_until(lambda: connections().get(label, 0) == before.get(label, 0), 30, "the closed connection to drop out")
