"""kvload: a steady open-loop load generator for a KVStore++ node.

Configured by flags or the environment (flags win): LOAD_OPS_PER_SEC, LOAD_GET_RATIO,
LOAD_SET_RATIO, LOAD_DEL_RATIO, LOAD_INCR_RATIO, METRICS_PORT; the server and token as
kvctl takes them (cli/credentials.py). Runs until SIGTERM/Ctrl-C (exit 0) or --duration.
Bad configuration: a message on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from .client import KvctlError
from .credentials import config_path, load_login, resolve
from .loadgen import OPS, LoadConfig, LoadGenerator, LoadMetrics

DEFAULTS = {"ops_per_sec": 100.0, "get": 0.7, "set": 0.2, "del": 0.05, "incr": 0.05, "metrics_port": 9400}
RATIO_ENV = {"get": "LOAD_GET_RATIO", "set": "LOAD_SET_RATIO", "del": "LOAD_DEL_RATIO", "incr": "LOAD_INCR_RATIO"}
DEFAULT_MAX_IN_FLIGHT = 256
# Each request in flight holds a connection (a file descriptor here and on the node).
MAX_IN_FLIGHT_LIMIT = 10_000


class ConfigError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvload", description="Steady open-loop load on a KVStore++ node.")
    parser.add_argument("--target-url", help="the node (default: $KVCTL_URL, the login file, then kvctl's default)")
    parser.add_argument("--token", help="bearer token (default: $KVCTL_TOKEN, then the login file)")
    parser.add_argument("--ops-per-sec", type=float, help="target rate ($LOAD_OPS_PER_SEC, default 100)")
    for op, env in RATIO_ENV.items():
        parser.add_argument(f"--{op}-ratio", type=float, help=f"share of {op} ops (${env}, default {DEFAULTS[op]})")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port on 127.0.0.1 ($METRICS_PORT, default 9400)")
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address the metrics endpoint binds (default 127.0.0.1)"
    )
    parser.add_argument("--duration", type=float, help="seconds to run (default: until SIGTERM/Ctrl-C)")
    parser.add_argument("--poisson", action="store_true", help="Poisson arrivals instead of a fixed schedule")
    parser.add_argument(
        "--max-in-flight",
        "--workers",  # the older name, kept
        dest="max_in_flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help=f"requests in flight at most, 1..{MAX_IN_FLIGHT_LIMIT} (default {DEFAULT_MAX_IN_FLIGHT})",
    )
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys per op kind (default 1000)")
    return parser


def _number(flag: float | None, environ: Mapping[str, str], env: str, default: float) -> float:
    if flag is not None:
        return flag
    text = environ.get(env)
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{env} must be a number, got {text!r}") from None


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[LoadConfig, int]:
    """The validated configuration and the metrics port; ConfigError on bad input."""
    rate = _number(args.ops_per_sec, environ, "LOAD_OPS_PER_SEC", DEFAULTS["ops_per_sec"])
    if not rate > 0:
        raise ConfigError(f"the rate must be > 0 ops/s, got {rate}")
    raw = {op: _number(getattr(args, f"{op}_ratio"), environ, env, DEFAULTS[op]) for op, env in RATIO_ENV.items()}
    if any(not share >= 0 for share in raw.values()):
        raise ConfigError(f"ratios must be >= 0, got {raw}")
    total = sum(raw.values())
    if not total > 0:
        raise ConfigError("the ratios must sum to more than 0")
    port = int(_number(args.metrics_port, environ, "METRICS_PORT", DEFAULTS["metrics_port"]))
    if not 0 < port < 65536:
        raise ConfigError(f"METRICS_PORT must be 1..65535, got {port}")
    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration must be > 0, got {args.duration}")
    if not 1 <= args.max_in_flight <= MAX_IN_FLIGHT_LIMIT:
        raise ConfigError(f"--max-in-flight must be 1..{MAX_IN_FLIGHT_LIMIT}, got {args.max_in_flight}")
    if args.keys < 1:
        raise ConfigError(f"--keys must be >= 1, got {args.keys}")
    try:
        target = resolve(args.target_url, args.token, environ, load_login(config_path(environ)))
    except KvctlError as error:
        raise ConfigError(str(error)) from None
    ratios = {op: raw[op] / total for op in OPS}
    config = LoadConfig(
        target.url, target.token, rate, ratios, args.poisson, args.duration, args.max_in_flight, args.keys
    )
    return config, port


async def _run(generator: LoadGenerator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await generator.run(stop)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        config, port = build_config(args, os.environ)
    except ConfigError as error:
        print(f"kvload: {error}", file=sys.stderr)
        sys.exit(2)
    registry = CollectorRegistry()
    metrics = LoadMetrics(registry)
    start_http_server(port, addr=args.metrics_host, registry=registry)
    shares = ", ".join(f"{op} {share:.2f}" for op, share in config.ratios.items())
    logging.getLogger("kvload").info(
        "target %s at %.0f ops/s (%s), at most %d in flight, metrics on %s:%d",
        config.url,
        config.ops_per_sec,
        shares,
        config.max_in_flight,
        args.metrics_host,
        port,
    )
    uvloop.run(_run(LoadGenerator(config, metrics)))
    sys.exit(0)


if __name__ == "__main__":
    main()
