"""kvb's figures without a server: merged histograms, wrk's printed figures, the warnings."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

from kvstore.cli.kvb_engine import RunSettings
from kvstore.cli.kvb_result import Latency, OpResult, RunResult
from kvstore.cli.kvb_worker import new_histogram
from kvstore.cli.kvb_workload import Target, Workload
from kvstore.cli.kvb_wrk import lua_script, parse

WORKLOAD = Workload("set-heavy", 0.0, 100, "kvb:", 16)
SETTINGS = RunSettings(Target.parse("http://127.0.0.1:9"), "t", 4, 2.0, 0.0, None, 10.0, 2)


def _run(cpu: list[float], rate: float | None = None, count: int = 1000) -> RunResult:
    histogram = new_histogram()
    histogram.record_value(1500, count)
    latency = Latency.from_histogram(histogram)
    run = RunResult("get-heavy", "python", 4, 2.0, rate, {"get": OpResult(latency, {})}, latency, cpu)
    run.check()
    return run


def test_worker_histograms_merge_through_their_encoding() -> None:
    first, second = new_histogram(), new_histogram()
    first.record_value(100, 3)
    second.record_value(10_000, 1)
    merged = new_histogram()
    for histogram in (first, second):
        merged.add(HdrHistogram.decode(histogram.encode()))
    latency = Latency.from_histogram(merged)
    assert latency.count == 4
    assert latency.min_ms == 0.1 and abs(latency.max_ms - 10.0) < 0.01
    assert latency.percentiles_ms["p50"] == 0.1


def test_a_busy_client_is_reported_as_client_bound() -> None:
    assert _run([0.5, 0.95]).client_bound()
    assert any(warning.startswith("client-bound") for warning in _run([0.5, 0.95]).warnings)
    assert _run([0.5, 0.6]).warnings == []


def test_an_open_loop_short_of_its_rate_says_so() -> None:
    (warning,) = _run([0.1], rate=1000.0, count=1000).warnings  # 500/s done of 1000/s asked
    assert warning.startswith("the target rate was not held: 1000 requests/s asked, 500 done")
    assert _run([0.1], rate=500.0, count=1000).warnings == []


def test_wrk_figures_sum_every_thread_s_statuses() -> None:
    output = "\n".join(
        [
            "Running 2s test",
            "KVB summary 1000 2000000 0 3 0 2 400",
            "KVB latency 250 9000 1200.5",
            "KVB percentile 50 1000",
            "KVB percentile 90 2000",
            "KVB percentile 95 2500",
            "KVB percentile 99 5000",
            "KVB percentile 99.9 8000",
            "KVB status 401 150",
            "KVB status 401 250",
        ]
    )
    run = parse(output, WORKLOAD, SETTINGS, [0.2, 0.2])
    assert run.errors() == {"read": 3, "timeout": 2, "http_401": 400}
    assert run.requests() == 600 and run.rps() == 300
    assert run.overall.percentiles_ms["p99"] == 5.0 and run.overall.max_ms == 9.0


def test_the_wrk_script_sends_the_workload() -> None:
    script = lua_script(WORKLOAD, SETTINGS)
    assert 'wrk.format("PUT", [==[/v1/kv/kvb%3A]==] .. math.random(0, 99), nil, body)' in script
    assert 'body = string.rep("x", 16)' in script
    assert 'wrk.headers["authorization"] = [==[Bearer t]==]' in script
