"""What a running profile (GET /v1/admin/profile) costs the node: PUT requests/s with and without one.

    python -m bench.profile_overhead [--duration 5] [--rounds 3] [--connections 50] [--fsync off|always]

One node (fsync=off by default, so the disk does not hide CPU costs; `--fsync always` for the
durable path), `kvb set-heavy` (wrk when installed) PUTs of 100-byte values over 10,000 keys.
Each round runs kvb twice, once alone and once while a profile samples the event loop for the
whole run, taking turns at going first (a growing WAL slows later runs). Prints each round's
rates side by side and the median overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx

from kvstore.chaos.launcher import NodeLauncher

KEYS = 10_000
VALUE_SIZE = 100
PASSWORD = "bench-password"


def _put_rate(node: NodeLauncher, args: argparse.Namespace, profiled: bool, workdir: Path) -> float:
    answers: list[httpx.Response] = []
    profile = threading.Thread(
        target=lambda: answers.append(
            httpx.get(
                f"{node.url}/v1/admin/profile",
                params={"seconds": str(args.duration + 1)},  # covers kvb's whole run
                headers={"authorization": f"Bearer {node.token()}"},
                timeout=args.duration + 30,
            )
        )
    )
    if profiled:
        profile.start()
    prefix = workdir / f"kvb-{'profiled' if profiled else 'alone'}"
    command = [sys.executable, "-m", "kvstore.cli.kvb", "set-heavy", "--url", node.url, "--token", node.token()]
    options = ["--concurrency", str(args.connections), "--duration", str(args.duration), "--keys", str(KEYS)]
    options += ["--value-size", str(VALUE_SIZE), "--output-prefix", str(prefix)]
    subprocess.run(command + options, check=True, stdout=subprocess.DEVNULL)
    if profiled:
        profile.join()
        answers[0].raise_for_status()
    (test,) = json.loads(prefix.with_suffix(".json").read_text())["tests"]
    if test["errors"]:
        raise RuntimeError(f"PUT: errors {test['errors']}")
    return float(test["rps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds of kvb per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--fsync", choices=("off", "always"), default="off")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        node = NodeLauncher(Path(workdir) / "node", PASSWORD, env={"KVSTORE_FSYNC": args.fsync})
        try:
            node.start()
            print(f"{'round':>5}  {'PUT/s alone':>12}  {'PUT/s profiled':>14}  {'overhead':>8}", flush=True)
            overheads = []
            for round_index in range(args.rounds):
                order = (False, True) if round_index % 2 == 0 else (True, False)
                rates = {profiled: _put_rate(node, args, profiled, Path(workdir)) for profiled in order}
                overhead = 1 - rates[True] / rates[False]
                overheads.append(overhead)
                print(
                    f"{round_index + 1:>5}  {rates[False]:>12.0f}  {rates[True]:>14.0f}  {overhead:>8.1%}", flush=True
                )
            print(f"median overhead: {statistics.median(overheads):.1%}")
        finally:
            node.close()


if __name__ == "__main__":
    main()
