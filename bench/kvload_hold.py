"""Does kvload hold its target rate? Measured from kvload's own /metrics against one node.

    python -m bench.kvload_hold [--ops-per-sec 2000] [--seconds 60] [--warmup 5] [--write]

Starts one kvstored (fsync=always, the default) and kvload with the default ratios, scrapes
kvload's /metrics after --warmup seconds and again --seconds later, and reports the achieved
rate (kvload_ops_total deltas, per op), the op shares, errors by reason, the schedule lag and
latency from the histogram, and kvload's warning lines. Then kvload is stopped with SIGTERM
and its exit code shown. --write appends the report to bench/results/RESULTS-kvload.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kvstore.chaos.launcher import NodeLauncher, free_port

from .paths import results_file

ADMIN_PASSWORD = "bench-password"
OPS = ("get", "set", "del", "incr")
RESULTS_PATH = results_file("kvload")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _wait_metrics(port: int, process: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kvload exited with {process.returncode}")
        try:
            scrape(port)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError("kvload's /metrics never answered")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _by(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (sample, labels), value in samples.items() if sample == name}


def _histogram_quantile(before: Samples, after: Samples, fraction: float) -> float:
    """The upper bound of the bucket holding `fraction` of all ops (every op kind) in the window."""
    buckets: dict[float, float] = {}
    for (name, labels), value in after.items():
        if name == "kvload_request_duration_seconds_bucket":
            bound = float(dict(labels)["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value - before.get((name, labels), 0.0)
    total = buckets.get(float("inf"), 0.0)
    for bound in sorted(buckets):
        if total and buckets[bound] >= fraction * total:
            return bound
    return float("nan")


def _bound(seconds: float) -> str:
    return "over 10 s (the top bucket)" if seconds == float("inf") else f"{seconds * 1000:g} ms"


def measure(args: argparse.Namespace, workdir: Path) -> str:
    node = NodeLauncher(workdir / "node", ADMIN_PASSWORD)
    node.start()
    port = free_port()
    env = {**os.environ, "KVCTL_URL": node.url, "KVCTL_TOKEN": node.token(), "KVCTL_CONFIG": str(workdir / "none")}
    command = [sys.executable, "-m", "kvstore.cli.kvload", "--ops-per-sec", f"{args.ops_per_sec:g}"]
    command += ["--metrics-port", str(port), *args.kvload_args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_metrics(port, process)
        time.sleep(args.warmup)  # a benchmark's fixed window, not synchronisation
        assert node.process is not None
        pids = {"kvload": process.pid, "node": node.process.pid}
        before, start = scrape(port), time.monotonic()
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        time.sleep(args.seconds)
        after, elapsed = scrape(port), time.monotonic() - start
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        node.close()
    return report(args, before, after, elapsed, cpu, output, process.returncode)


def report(
    args: argparse.Namespace,
    before: Samples,
    after: Samples,
    elapsed: float,
    cpu: dict[str, float],
    output: str,
    code: int,
) -> str:
    first, last = _by(before, "kvload_ops_total", "op"), _by(after, "kvload_ops_total", "op")
    done = {op: last.get(op, 0.0) - first.get(op, 0.0) for op in OPS}
    total = sum(done.values())
    achieved = total / elapsed
    errors: dict[str, float] = {}
    for (name, labels), value in after.items():
        if name == "kvload_errors_total":
            reason = dict(labels)["reason"]
            errors[reason] = errors.get(reason, 0.0) + value - before.get((name, labels), 0.0)
    held = abs(achieved - args.ops_per_sec) <= 0.05 * args.ops_per_sec
    shares = ", ".join(f"{op} {done[op] / total:.3f}" if total else f"{op} -" for op in OPS)
    warnings = [line for line in output.splitlines() if "cannot hold" in line]
    lines = [
        f"    python -m bench.kvload_hold --ops-per-sec {args.ops_per_sec:g} --seconds {args.seconds:g} "
        + " ".join(args.kvload_args),
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} cores (1-minute load average "
        f"{os.getloadavg()[0]:.2f} at the end), Python {platform.python_version()}; node and kvload on the machine.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| achieved (kvload_ops_total over {elapsed:.1f} s) | {total:,.0f} ops = {achieved:,.0f} ops/s "
        f"(target {args.ops_per_sec:,.0f}: {'held within 5%' if held else 'NOT held'}) |",
        "| per op, ops/s | " + ", ".join(f"{op} {done[op] / elapsed:,.0f}" for op in OPS) + " |",
        f"| op shares (target 0.70/0.20/0.05/0.05) | {shares} |",
        "| errors in the window | "
        + (", ".join(f"{reason} {count:,.0f}" for reason, count in errors.items() if count) or "none")
        + " |",
        f"| kvload_schedule_lag_seconds at the end | {after.get(('kvload_schedule_lag_seconds', ()), 0.0):.4f} |",
        f"| kvload_achieved_ops_per_second at the end | {after.get(('kvload_achieved_ops_per_second', ()), 0.0):,.0f} |",
        "| latency from intended start, p50 / p99 (bucket bound) | "
        + " / ".join(_bound(_histogram_quantile(before, after, fraction)) for fraction in (0.5, 0.99))
        + " |",
        "| CPU in the window (share of one core; per op) | "
        + ", ".join(
            f"{name} {seconds / elapsed:.0%}; {1e6 * seconds / total if total else float('nan'):.0f} us"
            for name, seconds in cpu.items()
        )
        + " |",
        f"| warning lines over the whole run | {len(warnings)} |",
        f"| exit on SIGTERM | {code} |",
    ]
    if warnings:
        lines += ["", "First warning line:", "", "    " + warnings[0]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops-per-sec", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window (default 60)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window (default 5)")
    parser.add_argument("--write", action="store_true", help=f"append the report to {RESULTS_PATH.name}")
    parser.add_argument("kvload_args", nargs="*", help="more kvload flags, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvbench-") as folder:
        text = measure(args, Path(folder))
    print(text)
    if args.write:
        with RESULTS_PATH.open("a") as out:
            out.write(f"\n## {args.ops_per_sec:,.0f} ops/s for {args.seconds:g} s\n\n" + text)


if __name__ == "__main__":
    main()
