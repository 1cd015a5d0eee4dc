"""The bake-off's command line: runs the sections and writes the report (``python -m bench.bakeoff``)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ..paths import results_file
from .candidates import CANDIDATES
from .http_load import QUIET_CORES, run_http
from .micro import run_micro
from .report import BakeoffResults, http_table, machine_facts, micro_table, render_markdown, streaming_lines, to_json
from .streaming import run_streaming

RESULTS_PATH = results_file("bakeoff")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bakeoff",
        description="HTTP server bake-off (+ micro-benchmarks and a streaming-disconnect check).",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk keep-alive connections (default 50)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per scenario (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="measured runs per scenario, best reported")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help=f"before each measured run, wait up to this many seconds for other work to use < {QUIET_CORES} cores",
    )
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CANDIDATES], help="candidates to run")
    parser.add_argument("--check-streaming", action="store_true", help="run only the streaming-disconnect check")
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_PATH, help=f"markdown report (default {RESULTS_PATH.name})"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    facts = machine_facts()
    if args.check_streaming:
        results = BakeoffResults(facts, [], [], run_streaming())
        print("\n".join(streaming_lines(results.streaming)), file=out)
    else:
        per_server_s = 2 * (args.warmup + args.repeats * args.duration)
        print(f"== http ({len(args.only or CANDIDATES)} servers, ~{per_server_s:.0f} s each)", file=out)
        http = run_http(args, out)
        print("== micro", file=out)
        micro = run_micro()
        print("== streaming", file=out)
        results = BakeoffResults(facts, http, micro, run_streaming())
        print(
            "\n".join(["", *http_table(http), "", *micro_table(micro), "", *streaming_lines(results.streaming)]),
            file=out,
        )
        facts["loadavg_end"] = os.getloadavg()
        command = shlex.join(["python", "-m", "bench.bakeoff", *argv])
        args.output.write_text(render_markdown(results, command, args))
        print(f"\nwrote {args.output}", file=out)
    if args.json:
        print(to_json(results))
