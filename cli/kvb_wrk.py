"""The wrk engine: wrk (C, closed loop) driven by a generated Lua script that prints its figures.

The script picks a random key per request as the python engine does, counts error statuses per
thread in its `response` hook, and in `done` prints one `KVB ...` line per figure for
`parse` to read. Latency is wrk's own distribution (microsecond buckets; wrk 4 adds its
coordinated-omission correction for a closed loop), not an HdrHistogram, and one for the
whole test: so this engine runs single-operation tests only.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .kvb_engine import PROGRESS_INTERVAL_S, EngineError, RunSettings
from .kvb_progress import ProgressLine
from .kvb_result import PERCENTILES, Latency, OpResult, RunResult, percentile_name
from .kvb_workload import Workload

MAX_THREADS = 2  # wrk's threads; the node shares this project's 2-core machine


def available() -> bool:
    return shutil.which("wrk") is not None


def lua_script(workload: Workload, settings: RunSettings) -> str:
    """A script for wrk: the workload's requests, and its figures printed as `KVB` lines."""
    path = workload.key_path(settings.target)
    op = workload.ops()
    if len(op) != 1:
        raise EngineError("the wrk engine runs single-operation tests (get-heavy, set-heavy) only")
    token = f'wrk.headers["authorization"] = {_lua_string("Bearer " + settings.token)}' if settings.token else ""
    if op[0] == "get":
        request = f'return wrk.format("GET", {_lua_string(path)} .. math.random(0, {workload.keys - 1}))'
        body = ""
    else:
        request = f'return wrk.format("PUT", {_lua_string(path)} .. math.random(0, {workload.keys - 1}), nil, body)'
        body = f'body = string.rep("x", {workload.value_size})'
    percentiles = ", ".join(f"{p:g}" for p in PERCENTILES)
    return f"""{token}
{body}
local threads = {{}}
statuses = {{}}
function setup(thread)
  table.insert(threads, thread)
  thread:set("seed", #threads)
end
function init(args) math.randomseed(os.time() * 16 + seed) end
function request() {request} end
function response(status, headers, body)
  if status > 399 then statuses[status] = (statuses[status] or 0) + 1 end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("KVB summary %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.timeout, e.status))
  io.write(string.format("KVB latency %d %d %f\\n", latency.min, latency.max, latency.mean))
  for _, p in ipairs({{{percentiles}}}) do
    io.write(string.format("KVB percentile %g %d\\n", p, latency:percentile(p)))
  end
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      io.write(string.format("KVB status %d %d\\n", status, count))
    end
  end
end
"""


def _lua_string(text: str) -> str:
    if "]==]" in text:
        raise EngineError("the token or key prefix cannot be passed to wrk")
    return "[==[" + text + "]==]"


def parse(output: str, workload: Workload, settings: RunSettings, cpu: list[float]) -> RunResult:
    """The `KVB` lines of a run into a RunResult."""
    lines = [line.split()[1:] for line in output.splitlines() if line.startswith("KVB ")]
    found: dict[str, list[list[str]]] = {}
    for fields in lines:
        found.setdefault(fields[0], []).append(fields[1:])
    if "summary" not in found or "latency" not in found:
        raise EngineError(f"wrk printed no figures:\n{output[-2000:]}")
    requests, duration_us, connect, read, write, timeout, status = (int(v) for v in found["summary"][0])
    errors = {
        kind: n for kind, n in (("connect", connect), ("read", read), ("write", write), ("timeout", timeout)) if n
    }
    for code, count in found.get("status", []):  # a line per thread and status
        errors[f"http_{code}"] = errors.get(f"http_{code}", 0) + int(count)
    low, high, mean = found["latency"][0]
    ok = max(0, requests - status)
    percentiles = {percentile_name(float(p)): int(v) / 1000 for p, v in found.get("percentile", [])}
    # wrk's latency counts every response; with none successful there is no latency to report.
    latency = Latency(ok, int(low) / 1000, float(mean) / 1000, int(high) / 1000, percentiles)
    if ok == 0:
        latency = Latency(0, 0.0, 0.0, 0.0, dict.fromkeys(percentiles, 0.0))
    run = RunResult(
        test=workload.name,
        engine="wrk",
        connections=settings.connections,
        duration_s=duration_us / 1e6,
        rate=None,
        ops={workload.ops()[0]: OpResult(latency, errors)},
        overall=latency,
        client_cpu=cpu,
    )
    run.check()
    return run


def run_wrk(workload: Workload, settings: RunSettings) -> RunResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise EngineError("wrk is not installed (Debian package 'wrk'); use --engine python")
    threads = min(MAX_THREADS, settings.connections)
    url = f"http://{settings.target.host_header}"
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "kvb.lua"
        script.write_text(lua_script(workload, settings))

        def command(seconds: int) -> list[str]:
            timeout = f"{max(1, round(settings.timeout_s))}s"
            return [wrk, f"-t{threads}", f"-c{settings.connections}", f"-d{seconds}s", "--timeout", timeout]

        if settings.warmup_s > 0:
            _run(command(max(1, round(settings.warmup_s))) + ["-s", str(script), url], workload, settings.warmup_s)
        before = _children_cpu_s()
        output = _run(command(round(settings.duration_s)) + ["-s", str(script), url], workload, settings.duration_s)
        cpu_s = _children_cpu_s() - before
    # wrk reports no per-thread CPU: its threads are taken as sharing it evenly.
    share = round(cpu_s / settings.duration_s / threads, 3)
    return parse(output, workload, settings, [share] * threads)


def _run(command: list[str], workload: Workload, seconds: float) -> str:
    with (
        ProgressLine(workload.name, seconds, None) as line,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process,
    ):
        while process.poll() is None:
            line.update()
            time.sleep(PROGRESS_INTERVAL_S)
        output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise EngineError(f"wrk failed ({process.returncode}):\n{output[-2000:]}")
    return output


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
