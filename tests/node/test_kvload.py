"""kvload against a real node: the rate and ratios it is asked for, its metrics, its exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.harness import NodeProcess, free_port
from support.waiting import wait_until

RATE = 300
RATIOS = {"get": 0.5, "set": 0.3, "del": 0.1, "incr": 0.1}


def _kvload(node: NodeProcess | HeldServer, port: int, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
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


class HeldServer:
    """Stands where the node is expected and holds every request until released, counting how many it holds."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.release = threading.Event()
        self.held = 0
        self.most_held = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the node answers

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    server.held += 1
                    server.most_held = max(server.most_held, server.held)
                server.release.wait(timeout=120)
                with lock:
                    server.held -= 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def token(self) -> str:
        return "held-token"

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()


@pytest.fixture
def held_server() -> Iterator[HeldServer]:
    server = HeldServer()
    yield server
    server.close()


@pytest.mark.parametrize("schedule", [[], ["--poisson"]], ids=["fixed", "poisson"])
def test_kvload_holds_the_rate_and_ratios_and_exits_0_on_sigterm(
    node: NodeProcess, tmp_path: Path, schedule: list[str]
) -> None:
    port = free_port()
    load = _kvload(node, port, tmp_path, *schedule)
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


def test_kvload_never_has_more_than_max_in_flight_requests_and_drops_beyond_its_backlog(
    held_server: HeldServer, tmp_path: Path
) -> None:
    port = free_port()
    load = _kvload(held_server, port, tmp_path, "--ops-per-sec", "5000", "--max-in-flight", "3")
    try:
        wait_until(lambda: held_server.held == 3, timeout_s=60, what="3 requests held")
        # Every request is held: the schedule's ops pile up behind the 3 in flight until the
        # backlog is full and new ones are dropped.
        wait_until(
            lambda: any(
                name == "kvload_errors_total" and ("reason", "generator_saturated") in labels and value > 0
                for (name, labels), value in _samples(port).items()
            ),
            timeout_s=60,
            what="ops dropped as generator_saturated",
        )
        assert held_server.most_held == 3
    finally:
        # SIGTERM with requests in flight: they are abandoned, the exit is prompt and clean.
        load.send_signal(signal.SIGTERM)
        output, _ = load.communicate(timeout=60)
    assert load.returncode == 0, output


def test_kvload_bad_config_exits_2(node: NodeProcess, tmp_path: Path) -> None:
    port = free_port()
    for args in (
        ["--ops-per-sec", "0"],
        ["--set-ratio", "-1"],
        ["--get-ratio", "0", "--set-ratio", "0", "--del-ratio", "0", "--incr-ratio", "0"],
        ["--max-in-flight", "0"],
        ["--workers", "0"],
        ["--max-in-flight", "10001"],
        ["--keys", "0"],
    ):
        load = _kvload(node, port, tmp_path, *args)
        output, _ = load.communicate(timeout=30)
        assert load.returncode == 2, (args, output)
        assert output.startswith("kvload: "), output
