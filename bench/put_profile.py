"""Where a PUT's time goes inside the node: a profile taken while wrk sends PUTs, summed by function.

    python -m bench.put_profile [--fsync off|always] [--profiler endpoint|py-spy] [--duration 8]
                                [--connections 50] [--top 30] [--save FILE]

One node, wrk PUTs of 100-byte values over 10,000 keys (a warm-up first), and a profile of the
event loop's thread covering the load. Prints the load's rate and latency, then the functions
with the largest share of the samples: self (the innermost frame) and inclusive (it or what it
called). Two profilers, because they see different things:

- `endpoint`: the node's own GET /v1/admin/profile (SIGPROF, one sample per 5 ms of CPU). Python
  frames only, and C time (a syscall, uvloop, granian) is counted in the Python frame that runs
  next, so it says which of our functions are costly, not exactly how much.
- `py-spy`: `py-spy record --native` from outside (needs ptrace: root, or CAP_SYS_PTRACE), 50
  samples a second of wall time, idle ones left out. Native frames show the syscalls and the
  server's C and Rust code; `epoll_pwait` is the loop waiting for work. Each sample pauses the
  node, so it serves several times slower while sampled (the printed rate shows by how much).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import httpx

from kvstore.chaos.launcher import NodeLauncher

from . import wrk

KEYS = 10_000
VALUE = "x" * 100
PASSWORD = "bench-password"
PY_SPY_RATE = 50  # each sample pauses the node to unwind its stacks: at 250 a second PUT/s fell 20x


def summarize(folded: str, main_thread_only: bool) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, inclusive samples per function, self samples per function) of folded stacks;
    py-spy's start with a `thread (ID): NAME` frame, kept to the main thread (the event loop)."""
    total, inclusive, own = 0, Counter[str](), Counter[str]()
    for line in folded.splitlines():
        stack, count_text = line.rsplit(" ", 1)
        frames = stack.split(";")
        if main_thread_only:
            if "MainThread" not in frames[0]:
                continue
            frames = frames[1:]
        names = [frame.split(" (")[0] for frame in frames] or ["?"]
        count = int(count_text)
        total += count
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
    return total, inclusive, own


def _endpoint_profile(node: NodeLauncher, seconds: int) -> tuple[threading.Thread, list[str]]:
    found: list[str] = []

    def fetch() -> None:
        answer = httpx.get(
            f"{node.url}/v1/admin/profile",
            params={"seconds": str(seconds)},
            headers={"Authorization": f"Bearer {node.token()}"},
            timeout=seconds + 30,
        )
        answer.raise_for_status()
        found.append(answer.text)

    thread = threading.Thread(target=fetch)
    thread.start()
    return thread, found


def _py_spy_profile(node: NodeLauncher, seconds: int, out: Path) -> tuple[threading.Thread, list[str]]:
    assert node.process is not None
    found: list[str] = []
    command = [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(node.process.pid)]
    command += ["-d", str(seconds), "-r", str(PY_SPY_RATE), "-f", "raw", "-o", str(out), "--threads", "--native"]

    def record() -> None:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        found.append(out.read_text())

    thread = threading.Thread(target=record)
    thread.start()
    return thread, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsync", choices=("off", "always"), default="off")
    parser.add_argument("--profiler", choices=("endpoint", "py-spy"), default="endpoint")
    parser.add_argument("--duration", type=int, default=8, help="seconds of load (the profile covers all but 1)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--top", type=int, default=30, help="functions listed")
    parser.add_argument("--save", type=Path, help="also write the folded stacks here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        node = NodeLauncher(Path(workdir) / "node", PASSWORD, env={"KVSTORE_FSYNC": args.fsync})
        try:
            node.start()
            headers = {"Authorization": f"Bearer {node.token()}"}
            script = wrk.lua_requests("PUT", "/v1/kv/bench:k", KEYS, VALUE, headers)
            wrk.run(node.url, 2, args.connections, script)  # warm up: keys exist, caches full
            seconds = args.duration - 1
            if args.profiler == "endpoint":
                profiling, found = _endpoint_profile(node, seconds)
            else:
                profiling, found = _py_spy_profile(node, seconds, Path(workdir) / "py-spy.txt")
            result = wrk.run(node.url, args.duration, args.connections, script)
            profiling.join()
            if not found:
                raise RuntimeError(f"the {args.profiler} profile failed (see above)")
        finally:
            node.close()
    folded = found[0]
    if args.save:
        args.save.write_text(folded)
    total, inclusive, own = summarize(folded, main_thread_only=args.profiler == "py-spy")
    print(
        f"PUT fsync={args.fsync}, {args.connections} connections: {result.requests_per_s:,.0f} req/s, "
        f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms; {args.profiler}: {total} samples of the loop"
    )
    print(f"\n{'self':>6}  {'incl.':>6}  function (largest self share first)")
    for name, count in own.most_common(args.top):
        print(f"{count / total:>6.1%}  {inclusive[name] / total:>6.1%}  {name}")
    print(f"\n{'incl.':>6}  function (largest inclusive share first)")
    for name, count in inclusive.most_common(args.top):
        print(f"{count / total:>6.1%}  {name}")


if __name__ == "__main__":
    main()
