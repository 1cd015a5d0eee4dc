"""kvload against a real node: the rate and ratios it is asked for, its metrics, its exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support.harness import NodeProcess, free_port
from support.waiting import wait_until

RATE = 300
RATIOS = {"get": 0.5, "set": 0.3, "del": 0.1, "incr": 0.1}


def _kvload(node: NodeProcess, port: int, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "KVCTL_URL": node.url,
        "KVCTL_TOKEN": node.token(),
        "KVCTL_CONFIG": str(tmp_path / "none.json"),
    }
    env.update({"LOAD_OPS_PER_SEC": str(RATE), "METRICS_PORT": str(port)})
    env.update({f"LOAD_{op.upper()}_RATIO": str(share) for op, share in RATIOS.items()})
    command = [sys.executable, "-m", "kvstore.cli.kvload", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _ops(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {op: samples.get(("kvload_ops_total", (("op", op),)), 0.0) for op in RATIOS}


def test_kvload_holds_the_rate_and_ratios_and_exits_0_on_sigterm(node: NodeProcess, tmp_path: Path) -> None:
    port = free_port()
    load = _kvload(node, port, tmp_path)
    try:
        wait_until(lambda: sum(_ops(_samples(port)).values()) > 0, what="kvload's first ops")
        first = _ops(_samples(port))
        start = time.monotonic()
        wait_until(lambda: time.monotonic() - start >= 6, timeout_s=20, what="6 s of load")
        samples = _samples(port)
        elapsed = time.monotonic() - start
    finally:
        load.send_signal(signal.SIGTERM)
        output, _ = load.communicate(timeout=60)
    assert load.returncode == 0, output
    done = {op: count - first[op] for op, count in _ops(samples).items()}
    total = sum(done.values())
    # Generous: a busy 2-core machine runs the node, kvload and other tests at once.
    assert 0.7 * RATE * elapsed <= total <= 1.15 * RATE * elapsed, (total, elapsed, output)
    for op, share in RATIOS.items():
        assert abs(done[op] / total - share) < 0.05, (done, output)
    assert samples[("kvload_target_ops_per_second", ())] == RATE
    assert ("kvload_schedule_lag_seconds", ()) in samples
    assert samples[("kvload_request_duration_seconds_count", (("op", "get"),))] > 0
    errors = sum(value for (name, _), value in samples.items() if name == "kvload_errors_total")
    assert errors == 0, (samples, output)


def test_kvload_warns_when_the_rate_cannot_be_held(node: NodeProcess, tmp_path: Path) -> None:
    port = free_port()
    load = _kvload(node, port, tmp_path, "--ops-per-sec", "100000", "--duration", "12", "--workers", "4")
    output, _ = load.communicate(timeout=90)
    assert load.returncode == 0, output
    assert "cannot hold the target rate: target 100000 ops/s, achieved" in output


def test_kvload_bad_config_exits_2(node: NodeProcess, tmp_path: Path) -> None:
    port = free_port()
    for args in (
        ["--ops-per-sec", "0"],
        ["--set-ratio", "-1"],
        ["--get-ratio", "0", "--set-ratio", "0", "--del-ratio", "0", "--incr-ratio", "0"],
    ):
        load = _kvload(node, port, tmp_path, *args)
        output, _ = load.communicate(timeout=30)
        assert load.returncode == 2, (args, output)
        assert output.startswith("kvload: "), output
