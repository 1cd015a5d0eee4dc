"""The compose Prometheus' alert rules: valid for promtool, and firing when (and only when) their
unit tests say so (compose/prometheus/alerts_test.yml); every metric they use is one the node exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvstore.node import metrics

RULES_DIR = Path(__file__).resolve().parents[2] / "compose" / "prometheus"


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
    exported = {metric.name for metric in metrics.REGISTRY.collect()}
    used = set(re.findall(r"expr: .*?\b(kvstore_[a-z_]+)", (RULES_DIR / "alerts.yml").read_text()))
    assert used and used <= exported, f"not exported: {used - exported}"
