"""kvb against a real node: every command as the design spells it, its JSON and CSV, its errors."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.cli import kvb_wrk
from kvstore.cli.credentials import Login, save_login
from kvstore.cli.kvb_report import CSV_COLUMNS
from support.harness import NodeProcess

SHORT = ["--concurrency", "4", "--duration", "2", "--keys", "200"]


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for the module: the commands only add benchmark keys to it."""
    node = NodeProcess(tmp_path_factory.mktemp("kvb") / "node")
    try:
        yield node.start()
    finally:
        node.close()


def _kvb(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    inherited = {name: value for name, value in os.environ.items() if name not in ("KVCTL_URL", "KVCTL_TOKEN")}
    environment = {**inherited, "KVCTL_CONFIG": str(tmp_path / "no-login.json"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kvstore.cli.kvb", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=180,
    )


def _outputs(prefix: Path) -> tuple[dict[str, Any], list[dict[str, str]], list[str]]:
    document = json.loads(prefix.with_suffix(".json").read_text())
    with prefix.with_suffix(".csv").open(newline="") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    return document, rows, columns


def _check_figures(test: dict[str, Any]) -> None:
    assert test["errors"] == {}, test
    assert test["requests"] > 0 and test["rps"] > 0, test
    latency = test["latency_ms"]
    assert 0 < latency["min_ms"] <= latency["percentiles_ms"]["p50"] <= latency["percentiles_ms"]["p99.9"]
    assert latency["percentiles_ms"]["p99.9"] <= latency["max_ms"]
    assert 0 < latency["mean_ms"] <= latency["max_ms"]
    for op in test["ops"].values():
        assert op["requests"] > 0 and op["errors"] == {}, test


@pytest.mark.parametrize(
    ("command", "tests"),
    [
        (["get-heavy"], ["get-heavy"]),
        (["set-heavy", "--value-size", "256"], ["set-heavy"]),
        (["mixed", "--read-ratio", "0.8"], ["mixed"]),
        (["suite"], ["get-heavy", "set-heavy", "mixed"]),
    ],
)
def test_each_command_writes_every_figure_to_json_and_a_csv_row_per_test(
    shared_node: NodeProcess, tmp_path: Path, command: list[str], tests: list[str]
) -> None:
    prefix = tmp_path / "prod-bench"
    args = [*command, "--url", shared_node.url, "--token", shared_node.token(), *SHORT]
    result = _kvb(tmp_path, *args, "--output-prefix", str(prefix))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # no progress line when stderr is not a terminal
    for name in tests:
        assert f"== {name}  {shared_node.url}" in result.stdout
    document, rows, columns = _outputs(prefix)
    assert columns == list(CSV_COLUMNS)
    assert [row["test"] for row in rows] == tests
    for row in rows:
        assert all(float(row[column]) > 0 for column in CSV_COLUMNS[1:]), row
    assert [test["test"] for test in document["tests"]] == tests
    for test in document["tests"]:
        _check_figures(test)
    mixed = [test for test in document["tests"] if test["test"] == "mixed"]
    for test in mixed:
        assert set(test["ops"]) == {"get", "set"}
        assert test["engine"] == "python"  # per-operation latency needs the python engine
    assert document["settings"]["url"] == shared_node.url
    assert "token" not in document["settings"]


def test_python_engine_open_loop_keeps_to_its_schedule(shared_node: NodeProcess, tmp_path: Path) -> None:
    prefix = tmp_path / "open"
    env = {"KVCTL_URL": shared_node.url, "KVCTL_TOKEN": shared_node.token()}
    args = ["get-heavy", "--engine", "python", "--rate", "100", "--warmup", "1", *SHORT, "--output-prefix", str(prefix)]
    result = _kvb(tmp_path, *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document, rows, _ = _outputs(prefix)
    (test,) = document["tests"]
    _check_figures(test)
    assert test["engine"] == "python" and test["target_rate"] == 100
    # An open loop never sends ahead of its schedule: 2 s at 100/s, one request per
    # connection at most straddling each end of the window.
    assert test["requests"] <= 100 * 2 + 2 * 4, test
    assert "open loop at 100 requests/s" in result.stdout


@pytest.mark.parametrize("engine", ["python", "wrk"])
def test_a_refused_token_is_counted_by_kind_and_exits_1(shared_node: NodeProcess, tmp_path: Path, engine: str) -> None:
    if engine == "wrk" and not kvb_wrk.available():
        pytest.fail("wrk is not installed: make system-deps")
    prefix = tmp_path / "refused"
    args = ["set-heavy", "--url", shared_node.url, "--token", "not-a-token", "--engine", engine, *SHORT]
    result = _kvb(tmp_path, *args, "--output-prefix", str(prefix))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "requests failed (check --token)" in result.stderr
    document, rows, _ = _outputs(prefix)
    (test,) = document["tests"]
    assert test["errors"]["http_401"] > 0 and set(test["errors"]) == {"http_401"}, test
    assert test["requests"] == 0 and test["rps"] == 0
    assert rows[0]["rps"] == "0.0"


def test_the_login_file_gives_url_and_token_as_to_kvctl(shared_node: NodeProcess, tmp_path: Path) -> None:
    login = tmp_path / "kvctl" / "config.json"
    save_login(login, Login(shared_node.url, shared_node.token(), "admin", None))
    result = _kvb(tmp_path, "set-heavy", *SHORT, env={"KVCTL_CONFIG": str(login)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"== set-heavy  {shared_node.url}" in result.stdout


def test_a_refused_preload_is_one_clear_message(shared_node: NodeProcess, tmp_path: Path) -> None:
    result = _kvb(tmp_path, "get-heavy", "--url", shared_node.url, "--token", "not-a-token", *SHORT)
    assert result.returncode == 1
    assert result.stderr.strip() == f"kvb: the node at {shared_node.url} refused the token (401): check --token"


def test_a_server_that_never_answers_counts_timeouts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the kernel does), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        args = ["set-heavy", "--url", url, "--token", "t", "--engine", "python", "--timeout", "0.5", *SHORT]
        result = _kvb(tmp_path, *args, "--output-prefix", str(tmp_path / "silent"))
    assert result.returncode == 1, result.stdout + result.stderr
    document, _, _ = _outputs(tmp_path / "silent")
    (test,) = document["tests"]
    assert test["errors"]["timeout"] > 0, test  # and maybe "closed": the unread accept queue fills
    assert test["requests"] == 0


def test_a_node_that_is_down_counts_refused_connections(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed again: nothing listens there
    args = ["set-heavy", "--url", url, "--token", "t", "--engine", "python", *SHORT]
    result = _kvb(tmp_path, *args, "--output-prefix", str(tmp_path / "down"))
    assert result.returncode == 1, result.stdout + result.stderr
    document, _, _ = _outputs(tmp_path / "down")
    (test,) = document["tests"]
    assert set(test["errors"]) == {"connect"} and test["requests"] == 0, test


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get-heavy", "--concurrency", "0"], "--concurrency must be 1..5000"),
        (["mixed", "--read-ratio", "1.5"], "--read-ratio must be between 0 and 1"),
        (["get-heavy", "--engine", "wrk", "--rate", "10"], "--rate needs --engine python"),
        (["mixed", "--engine", "wrk"], "--engine wrk runs get-heavy and set-heavy only"),
        (["get-heavy", "--url", "https://127.0.0.1:1"], "kvb speaks plain HTTP/1.1 only"),
        (["get-heavy", "--url", "ftp://x"], "server URL must start with http:// or https://"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = _kvb(tmp_path, *args, "--token", "t", env={"KVCTL_URL": "http://127.0.0.1:1"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
