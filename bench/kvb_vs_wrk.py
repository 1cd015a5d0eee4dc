"""Does kvb measure the server or itself? kvb get-heavy beside wrk on the same node, same run.

    python -m bench.kvb_vs_wrk [--duration 10] [--rounds 3] [--connections 50] [--write]

Starts one node (fsync=always), preloads 10,000 keys of 256 bytes, then per round runs in
turn: wrk -t2 -c50 (GET of a random preloaded key, the reference), `kvb get-heavy -c50
--engine python` and `kvb get-heavy -c50 --engine wrk`. Rounds alternate so a busy machine
slows all three alike; the medians and each kvb engine's ratio to wrk are printed and, with
--write, written to bench/results/RESULTS-kvb.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvstore.chaos.launcher import NodeLauncher
from kvstore.cli.kvb_preload import preload
from kvstore.cli.kvb_workload import Workload

from . import wrk
from .paths import results_file

KEYS = 10_000
VALUE_SIZE = 256
ADMIN_PASSWORD = "bench-password"
RESULTS_PATH = results_file("kvb")
ENGINES = ("python", "wrk")


def _kvb(node: NodeLauncher, engine: str, args: argparse.Namespace, prefix: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "kvstore.cli.kvb", "get-heavy", "--url", node.url, "--token", node.token()]
    command += ["-c", str(args.connections), "-d", str(args.duration), "--keys", str(KEYS)]
    command += ["--value-size", str(VALUE_SIZE), "--engine", engine, "--output-prefix", str(prefix)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "KVCTL_CONFIG": str(prefix.parent / "no-login.json")},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"kvb failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    test: dict[str, Any] = json.loads(prefix.with_suffix(".json").read_text())["tests"][0]
    return test


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()  # the machine may be busy with other work: the report says how busy
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        node = NodeLauncher(workdir / "node", ADMIN_PASSWORD)
        try:
            node.start()
            headers = {"authorization": f"Bearer {node.token()}"}
            preload(node.url, node.token(), "", Workload("get-heavy", 1.0, KEYS, "kvb:", VALUE_SIZE))
            script = wrk.lua_requests("GET", "/v1/kv/kvb%3A", KEYS, headers=headers)
            rounds: list[dict[str, Any]] = []
            for number in range(args.rounds):
                cpu_before = _children_cpu_s()
                reference = wrk.run(node.url, args.duration, args.connections, script, threads=2)
                reference_cpu_s = _children_cpu_s() - cpu_before
                entry: dict[str, Any] = {
                    "wrk_rps": reference.requests_per_s,
                    "wrk_cpu_us_per_request": reference_cpu_s * 1e6 / max(1, reference.requests),
                }
                for engine in ENGINES:
                    test = _kvb(node, engine, args, workdir / f"kvb-{engine}-{number}")
                    entry[engine] = {
                        "rps": test["rps"],
                        "errors": test["errors"],
                        "client_cpu": test["client"]["cpu_per_process"],
                        "client_bound": test["client"]["client_bound"],
                        # CPU per request: what the client costs, whatever else slows the machine.
                        "cpu_us_per_request": sum(test["client"]["cpu_per_process"])
                        * test["duration_s"]
                        * 1e6
                        / max(1, test["requests"]),
                    }
                rounds.append(entry)
                print(json.dumps(entry), flush=True)
        finally:
            node.close()
    wrk_median = statistics.median(r["wrk_rps"] for r in rounds)
    summary = {"wrk_rps": wrk_median}
    for engine in ENGINES:
        median = statistics.median(r[engine]["rps"] for r in rounds)
        summary[f"kvb_{engine}_rps"] = median
        summary[f"kvb_{engine}_ratio"] = median / wrk_median if wrk_median else 0.0
    return {"rounds": rounds, "summary": summary, "load_before": load_before, "load_after": os.getloadavg()}


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    summary = result["summary"]
    lines = [
        "# kvb beside wrk on the same node, same run",
        "",
        f"`python -m bench.kvb_vs_wrk --duration {args.duration} --rounds {args.rounds} "
        f"--connections {args.connections} --write`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.machine()} with {os.cpu_count()} CPUs shared by the node, the clients (and whatever else runs).",
        "",
        f"GET of a random key among {KEYS:,} preloaded ({VALUE_SIZE}-byte values), {args.connections} keep-alive "
        "connections, closed loop, node fsync=always. The reference is `wrk -t2`; rounds alternate wrk, "
        "`kvb get-heavy --engine python`, `kvb get-heavy --engine wrk`.",
        "",
        "Load average (1, 5, 15 min) before {} and after {}: a load well above the CPU count means other "
        "work shared the machine, and every figure below is lower for it (the ratio, measured in the same "
        "run, is what to read).".format(
            *(", ".join(f"{x:.1f}" for x in result[key]) for key in ("load_before", "load_after"))
        ),
        "",
        "Client CPU per request (user + system, us) is what each client costs whatever else slows the "
        "machine: with the node needing about one core of two, a client costing more per request than "
        "the node's share leaves it fewer requests to serve.",
        "",
        "| round | wrk req/s (CPU us/req) | kvb python req/s (ratio, CPU per process, us/req) "
        "| kvb wrk req/s (ratio, us/req) |",
        "|---:|---:|---:|---:|",
    ]
    for number, entry in enumerate(result["rounds"], 1):
        python, engine_wrk = entry["python"], entry["wrk"]
        cpu = ", ".join(f"{share:.0%}" for share in python["client_cpu"])
        lines.append(
            f"| {number} | {entry['wrk_rps']:,.0f} ({entry['wrk_cpu_us_per_request']:.0f}) "
            f"| {python['rps']:,.0f} ({python['rps'] / entry['wrk_rps']:.2f}x, "
            f"{cpu}{', client-bound' if python['client_bound'] else ''}, {python['cpu_us_per_request']:.0f}) | "
            f"{engine_wrk['rps']:,.0f} ({engine_wrk['rps'] / entry['wrk_rps']:.2f}x, "
            f"{engine_wrk['cpu_us_per_request']:.0f}) |"
        )
    lines += [
        "",
        f"Medians: wrk {summary['wrk_rps']:,.0f} req/s; kvb python {summary['kvb_python_rps']:,.0f} "
        f"({summary['kvb_python_ratio']:.2f}x); kvb wrk {summary['kvb_wrk_rps']:,.0f} "
        f"({summary['kvb_wrk_ratio']:.2f}x).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of wrk, kvb python, kvb wrk (default 3)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS_PATH.name}")
    args = parser.parse_args()
    result = run(args)
    summary = result["summary"]
    print(
        f"wrk -t2 -c{args.connections}: {summary['wrk_rps']:,.0f} req/s | "
        f"kvb --engine python: {summary['kvb_python_rps']:,.0f} ({summary['kvb_python_ratio']:.2f}x) | "
        f"kvb --engine wrk: {summary['kvb_wrk_rps']:,.0f} ({summary['kvb_wrk_ratio']:.2f}x)"
    )
    if args.write:
        RESULTS_PATH.write_text(markdown(result, args))
        print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
