"""What an Idempotency-Key costs an INCR: none, a fresh key per request, and retries (replays).

    python -m bench.idempotency_bench [--duration 10] [--connections 50] [--fsync off] [--rounds 2]

wrk (1 thread, keep-alive connections) against one kvstored on 127.0.0.1, INCR over 10,000
counters, three request shapes alternated `--rounds` times (the machine is shared: the spread
between rounds says how far to trust a difference):
- plain: no header, the path every client without retries takes;
- fresh key: a new Idempotency-Key per request, so each executes and logs its answer
  (a TXN record of two SETs instead of one SET);
- replay: 10,000 keys each bound to one counter, sent once to be remembered, then again
  and again: each request is answered from the stored answer and writes nothing.
Prints requests/s and latency per shape and round.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

import httpx

from kvstore.chaos.launcher import NodeLauncher

from . import wrk

COUNTERS = 10_000
ADMIN_PASSWORD = "bench-password"


def _script(token: str, header: str) -> str:
    """INCR of counter n % COUNTERS; `header` is a Lua expression of n for the Idempotency-Key, or ''."""
    lines = [
        'wrk.method = "POST"',
        f'wrk.headers["Authorization"] = "Bearer {token}"',
        "counter = 0",
        "request = function()",
        "  counter = counter + 1",
        f"  local n = counter % {COUNTERS}",
    ]
    if header:
        lines.append(f'  wrk.headers["Idempotency-Key"] = {header}')
    lines += ['  return wrk.format(nil, "/v1/kv/c" .. n .. "/incr")', "end"]
    return "\n".join(lines) + "\n"


def _remember_replay_keys(node: NodeLauncher, token: str, prefix: str) -> None:
    with httpx.Client(base_url=node.url, headers={"authorization": f"Bearer {token}"}, timeout=30) as client:
        for n in range(COUNTERS):
            client.post(f"/v1/kv/c{n}/incr", headers={"idempotency-key": f"{prefix}{n}"}).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--fsync", default="off", choices=("always", "interval", "off"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        node = NodeLauncher(Path(folder) / "node", ADMIN_PASSWORD, env={"KVSTORE_FSYNC": args.fsync})
        try:
            node.start()
            token = node.token()
            replay_prefix = f"replay-{uuid.uuid4()}-"
            _remember_replay_keys(node, token, replay_prefix)
            # Each wrk thread's counter restarts at 0, so fresh keys carry the run and round.
            shapes = {
                "plain": lambda _round: "",
                "fresh key": lambda run: f'"fresh-{uuid.uuid4()}-{run}-" .. counter',
                "replay": lambda _round: f'"{replay_prefix}" .. n',
            }
            print(
                f"INCR over {COUNTERS} counters, wrk -t1 -c{args.connections} -d{args.duration:g}s, fsync={args.fsync}"
            )
            print(f"{'shape':<10} {'round':>5} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8}")
            for round_number in range(1, args.rounds + 1):
                for name, header in shapes.items():
                    result = wrk.run(node.url, args.duration, args.connections, _script(token, header(round_number)))
                    print(
                        f"{name:<10} {round_number:>5} {result.requests_per_s:>9,.0f} {result.p50_ms:>7.2f} "
                        f"{result.p99_ms:>7.2f} {result.non_2xx:>8}"
                    )
        finally:
            node.close()


if __name__ == "__main__":
    main()
