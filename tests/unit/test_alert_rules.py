"""The compose Prometheus' alert rules: valid for promtool, and firing when (and only when) their
unit tests say so (compose/prometheus/alerts_test.yml); every metric they use is one the node exports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml

from kvstore.node import metrics

RULES_DIR = Path(__file__).resolve().parents[2] / "compose" / "prometheus"
# The series a family of each type exports (text format 0.0.4).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


def _promtool(*args: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian/Ubuntu: `apt-get install prometheus`, `make system-deps`)")
    done = subprocess.run([promtool, *args], cwd=RULES_DIR, capture_output=True, timeout=60, check=False)
    report = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{report}"
    return report


def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS" in _promtool("check", "rules", "alerts.yml")


def test_the_rules_fire_as_their_unit_tests_expect() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "alerts_test.yml")


def test_every_metric_the_rules_use_is_exported() -> None:
    """Every metric every rule's expression selects (parsed as PromQL) is a series the node exports,
    or Prometheus' own `up`."""
    exported = {"up"} | {
        family.name + suffix for family in metrics.REGISTRY.collect() for suffix in SERIES_SUFFIXES[family.type]
    }
    rules = [
        rule for group in yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"] for rule in group["rules"]
    ]
    used = {rule["alert"]: _selected(rule["expr"]) for rule in rules}
    assert all(used.values()), f"a rule selects no metric by name: {used}"
    assert len(used) >= 9, sorted(used)  # the archive's, the nodes', replication's, the WAL's, logins'
    missing = {alert: names - exported for alert, names in used.items() if names - exported}
    assert not missing, f"not exported by the node: {missing}"


def _selected(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    names: set[str] = set()
    promql_parser.walk(
        promql_parser.parse(expr),
        lambda node: names.add(node.name) if isinstance(node, promql_parser.VectorSelector) else None,
    )
    return names
