"""kvb: benchmark a KVStore++ node (get-heavy, set-heavy, mixed, suite).

    kvb get-heavy --url URL --concurrency 50 --duration 30
    kvb set-heavy --url URL --value-size 256 --concurrency 25 --duration 30
    kvb mixed --url URL --read-ratio 0.8 --concurrency 100 --duration 60
    kvb suite --url URL --concurrency 100 --duration 60 --output-prefix prod-bench

The server and token as kvctl takes them (cli/credentials.py). Prints a text report;
--output-prefix P also writes P.json (every figure) and P.csv (one row per test). Exit 0, or 1
when any request failed or the node refused the preload, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from . import kvb_wrk
from .client import KvctlError
from .credentials import config_path, load_login, resolve
from .kvb_engine import EngineError, RunSettings, run_python
from .kvb_preload import PreloadError, preload
from .kvb_report import text, write
from .kvb_result import RunResult
from .kvb_workload import Target, TargetError, Workload

# Limits, checked before anything is sent.
MAX_CONCURRENCY = 5000  # connections: each is a file descriptor here and on the node
MAX_PROCESSES = 64
MAX_KEYS = 100_000_000
MAX_VALUE_SIZE = 16 * 1024 * 1024


class UsageError(Exception):
    pass


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the node (default: $KVCTL_URL, the login file, then kvctl's default)")
    common.add_argument("--token", help="bearer token (default: $KVCTL_TOKEN, then the login file)")
    common.add_argument("--concurrency", "-c", type=int, default=50, help="connections (default 50)")
    common.add_argument("--duration", "-d", type=int, default=30, help="seconds measured per test (default 30)")
    common.add_argument("--warmup", type=int, default=0, help="seconds run first and not measured (default 0)")
    common.add_argument("--keys", type=int, default=10_000, help="key space: keys PREFIX0..PREFIX<N-1> (default 10000)")
    common.add_argument("--key-prefix", default="kvb:", help="prefix of every benchmark key (default kvb:)")
    common.add_argument("--value-size", type=int, default=256, help="bytes per value written (default 256)")
    common.add_argument(
        "--rate",
        type=float,
        help="open loop: requests/s over all connections on a fixed schedule, latency from each "
        "request's intended start (default: closed loop, as fast as answers come)",
    )
    common.add_argument(
        "--engine",
        choices=("auto", "python", "wrk"),
        default="auto",
        help="auto (default): wrk for closed-loop get-heavy and set-heavy when it is installed, else python",
    )
    common.add_argument("--processes", type=int, default=2, help="python engine's worker processes (default 2)")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds a request may take (default 10)")
    common.add_argument("--output-prefix", help="also write PREFIX.json and PREFIX.csv")
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvb", description="Benchmark a KVStore++ node.")
    commands = parser.add_subparsers(dest="command", required=True)
    common = _common()
    commands.add_parser("get-heavy", parents=[common], help="GETs of preloaded keys")
    commands.add_parser("set-heavy", parents=[common], help="PUTs of --value-size bytes")
    for name, what in (("mixed", "GETs and PUTs"), ("suite", "get-heavy, set-heavy and mixed in turn")):
        command = commands.add_parser(name, parents=[common], help=what)
        command.add_argument("--read-ratio", type=float, default=0.8, help="share of GETs in mixed (default 0.8)")
    return parser


def _check(args: argparse.Namespace) -> None:
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise UsageError(message)

    require(1 <= args.concurrency <= MAX_CONCURRENCY, f"--concurrency must be 1..{MAX_CONCURRENCY}")
    require(args.duration >= 1, "--duration must be >= 1 second")
    require(args.warmup >= 0, "--warmup must be >= 0 seconds")
    require(1 <= args.keys <= MAX_KEYS, f"--keys must be 1..{MAX_KEYS}")
    require(args.key_prefix != "", "--key-prefix must not be empty (kvb keeps its keys apart)")
    require(0 <= args.value_size <= MAX_VALUE_SIZE, f"--value-size must be 0..{MAX_VALUE_SIZE} bytes")
    require(args.rate is None or args.rate > 0, "--rate must be > 0 requests/s")
    require(1 <= args.processes <= MAX_PROCESSES, f"--processes must be 1..{MAX_PROCESSES}")
    require(args.timeout > 0, "--timeout must be > 0 seconds")
    read_ratio = getattr(args, "read_ratio", None)
    require(read_ratio is None or 0 <= read_ratio <= 1, "--read-ratio must be between 0 and 1")
    if args.engine == "wrk":
        require(args.rate is None, "--rate needs --engine python: wrk runs a closed loop only")
        require(args.command in ("get-heavy", "set-heavy"), "--engine wrk runs get-heavy and set-heavy only")
        require(kvb_wrk.available(), "--engine wrk: wrk is not installed (Debian package 'wrk')")


def workloads(args: argparse.Namespace) -> list[Workload]:
    def make(name: str, read_ratio: float) -> Workload:
        return Workload(name, read_ratio, args.keys, args.key_prefix, args.value_size)

    tests = {"get-heavy": 1.0, "set-heavy": 0.0, "mixed": getattr(args, "read_ratio", 0.8)}
    names = list(tests) if args.command == "suite" else [args.command]
    return [make(name, tests[name]) for name in names]


def engine_for(args: argparse.Namespace, workload: Workload) -> str:
    """auto: wrk where it can run the test (closed loop, one operation), else python."""
    if args.engine != "auto":
        return str(args.engine)
    if args.rate is None and len(workload.ops()) == 1 and kvb_wrk.available():
        return "wrk"
    return "python"


def _settings_record(args: argparse.Namespace, url: str) -> dict[str, Any]:
    record = {name: value for name, value in vars(args).items() if name not in ("token", "url")}
    return {"url": url, "started_at": datetime.now(UTC).isoformat(timespec="seconds"), **record}


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        _check(args)
        credentials = resolve(args.url, args.token, os.environ, load_login(config_path(os.environ)))
        target = Target.parse(credentials.url)
    except (UsageError, KvctlError, TargetError) as error:
        print(f"kvb: {error}", file=sys.stderr)
        sys.exit(2)
    record = _settings_record(args, credentials.url)
    settings = RunSettings(
        target,
        credentials.token,
        args.concurrency,
        float(args.duration),
        float(args.warmup),
        args.rate,
        args.timeout,
        args.processes,
    )
    runs: list[RunResult] = []
    try:
        preloaded = False
        for workload in workloads(args):
            if workload.read_ratio > 0 and not preloaded:
                preload(credentials.url, credentials.token, credentials.hint, workload)
                preloaded = True
            engine = engine_for(args, workload)
            run = kvb_wrk.run_wrk(workload, settings) if engine == "wrk" else run_python(workload, settings)
            runs.append(run)
            print(text([run], credentials.url), end="", flush=True)
    except (PreloadError, EngineError) as error:
        print(f"kvb: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("kvb: interrupted; nothing written", file=sys.stderr)
        sys.exit(130)
    if args.output_prefix:
        json_path, csv_path = write(args.output_prefix, runs, record)
        print(f"wrote {json_path} and {csv_path}")
    errors = [run.errors() for run in runs]
    failed = sum(sum(kinds.values()) for kinds in errors)
    if failed:
        advice = f" ({credentials.hint})" if any("http_401" in kinds for kinds in errors) else ""
        print(f"kvb: {failed} requests failed{advice}; see the errors above", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
