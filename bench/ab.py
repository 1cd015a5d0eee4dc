"""A change's effect on the node's speed: this checkout against another, side by side in one run.

    python -m bench.ab --base-python OTHER/.venv/bin/python [--fsync off|always] [--rounds 4]
                       [--duration 5] [--connections 50]

OTHER is a checkout of the code before the change with its own virtualenv (`git worktree add
/tmp/base COMMIT && cd /tmp/base && python3 -m venv .venv && .venv/bin/pip install -e .`). Each
round starts a fresh node from each checkout in turn, the two taking turns at going first (a
busy machine drifts), and runs wrk against it: PUTs of 100-byte values over 10,000 keys, then
GETs of 10 of them. Prints every round's req/s and p99 side by side, and the median ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from kvstore.chaos.launcher import NodeLauncher

from . import wrk

KEYS = 10_000
VALUE = "x" * 100
PASSWORD = "bench-password"


class _Node(NodeLauncher):
    """kvstored run by a given interpreter (and so from the checkout its virtualenv holds)."""

    def __init__(self, python: str, data_dir: Path, fsync: str) -> None:
        super().__init__(data_dir, PASSWORD, env={"KVSTORE_FSYNC": fsync})
        self.python = python

    def command(self) -> list[str]:
        return [self.python, *super().command()[1:]]


def _measure(python: str, workdir: Path, args: argparse.Namespace) -> dict[str, wrk.WrkResult]:
    node = _Node(python, workdir / "node", args.fsync)
    try:
        node.start()
        headers = {"Authorization": f"Bearer {node.token()}"}
        for index in range(10):
            httpx.put(f"{node.url}/v1/kv/bench:k{index}", content=VALUE, headers=headers).raise_for_status()
        put_script = wrk.lua_requests("PUT", "/v1/kv/bench:k", KEYS, VALUE, headers)
        get_script = wrk.lua_requests("GET", "/v1/kv/bench:k", 10, headers=headers)
        return {
            "PUT": wrk.run(node.url, args.duration, args.connections, put_script),
            "GET": wrk.run(node.url, args.duration, args.connections, get_script),
        }
    finally:
        node.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-python", required=True, help="the interpreter of the other checkout's virtualenv")
    parser.add_argument("--fsync", choices=("off", "always"), default="off")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per run")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    sides = {"base": args.base_python, "this": sys.executable}
    ratios: dict[str, list[float]] = {"PUT": [], "GET": []}
    print(f"fsync={args.fsync}, {args.connections} connections, {args.duration} s a run; req/s (p99 ms)")
    print(f"{'round':>5}  {'op':>3}  {'base':>16}  {'this':>16}  {'this/base':>9}", flush=True)
    for round_index in range(args.rounds):
        order = ("base", "this") if round_index % 2 == 0 else ("this", "base")
        results = {}
        for side in order:
            with tempfile.TemporaryDirectory() as workdir:
                results[side] = _measure(sides[side], Path(workdir), args)
        for op in ("PUT", "GET"):
            base, this = results["base"][op], results["this"][op]
            ratio = this.requests_per_s / base.requests_per_s
            ratios[op].append(ratio)
            print(
                f"{round_index + 1:>5}  {op:>3}  {base.requests_per_s:>8,.0f} ({base.p99_ms:>5.1f})  "
                f"{this.requests_per_s:>8,.0f} ({this.p99_ms:>5.1f})  {ratio:>8.2f}x",
                flush=True,
            )
    for op, values in ratios.items():
        print(f"median {op} this/base: {statistics.median(values):.2f}x")


if __name__ == "__main__":
    main()
