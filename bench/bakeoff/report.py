"""The bake-off's results: the machine they were measured on, markdown tables and JSON."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .http_load import GET_KEY, QUIET_CORES, WRK, ServerResult
from .micro import MicroResult
from .streaming import CHUNK_INTERVAL_S, DISCONNECT_WINDOW_S, StreamingReport

PACKAGES = (
    "granian",
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "aiohttp",
    "PyJWT",
    "msgpack",
    "google-crc32c",
    "orjson",
)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, Any]:
    """Date, machine, interpreter and package versions; ``loadavg_end`` is added at the end of the run."""
    wrk_banner = subprocess.run([WRK, "-v"], check=False, capture_output=True, text=True).stdout
    wrk_version = wrk_banner.split(" Copyright", 1)[0].strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version,
        "loadavg_start": os.getloadavg(),
        "versions": {name: _version(name) for name in PACKAGES},
    }


@dataclass
class BakeoffResults:
    """Everything one invocation measured."""

    facts: dict[str, Any]
    http: list[ServerResult]
    micro: list[MicroResult]
    streaming: StreamingReport


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def http_table(results: list[ServerResult]) -> list[str]:
    lines = [
        "| server | procs / threads | RSS MiB | GET req/s | GET p50 ms | GET p99 ms "
        "| PUT req/s | PUT p50 ms | PUT p99 ms | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        if result.skipped or result.error:
            status = f"skipped: {result.skipped}" if result.skipped else f"FAILED: {result.error}"
            status = " ".join(status.split()).replace("|", "\\|")
            lines.append(f"| {result.name} | | | | | | | | | {status} |")
            continue
        cells = [result.name, f"{result.processes} / {result.threads}", f"{result.rss_mib:.0f}"]
        notes = []
        for scenario in ("GET", "PUT"):
            best = result.scenarios[scenario].best
            cells += [f"{best.requests_per_s:,.0f}", _ms(best.p50_ms), _ms(best.p99_ms)]
            if best.non_2xx or best.socket_errors:
                notes.append(f"{scenario}: {best.non_2xx} non-2xx, {best.socket_errors} socket errors")
        lines.append("| " + " | ".join(cells) + f" | {'; '.join(notes)} |")
    return lines


def quiet_spread(results: list[ServerResult]) -> str:
    """The largest run-to-run spread among runs where other work stayed under QUIET_CORES."""
    spreads = []
    for result in results:
        for name, scenario in result.scenarios.items():
            rates = [run.requests_per_s for run in scenario.runs if run.other_cpu_cores < QUIET_CORES]
            if len(rates) > 1:
                spreads.append(((max(rates) - min(rates)) / max(rates), f"{result.name} {name}"))
    if not spreads:
        return "no scenario had two quiet runs"
    spread, where = max(spreads)
    return f"{spread:.0%} ({where})"


def runs_table(results: list[ServerResult]) -> list[str]:
    lines = [
        "| server | GET req/s (other CPU, cores), every run | PUT req/s (other CPU, cores), every run |",
        "|---|---|---|",
    ]
    for result in results:
        if result.scenarios:
            cells = [
                " / ".join(f"{run.requests_per_s:,.0f} ({run.other_cpu_cores:.2f})" for run in result.scenarios[s].runs)
                for s in ("GET", "PUT")
            ]
            lines.append(f"| {result.name} | {cells[0]} | {cells[1]} |")
    return lines


def micro_table(results: list[MicroResult]) -> list[str]:
    lines = ["| operation | ns/op | ops/s (1 core) | note |", "|---|---:|---:|---|"]
    lines += [f"| {r.name} | {r.ns_per_op:,.0f} | {r.ops_per_s:,.0f} | {r.note} |" for r in results]
    return lines


def streaming_table(report: StreamingReport) -> list[str]:
    lines = [
        "| server | mode | detected | after close (ms) | sends that 'succeeded' after close | observed |",
        "|---|---|---|---:|---:|---|",
    ]
    for c in report.checks:
        latency = f"{c.latency_ms:.0f}" if c.latency_ms is not None else "-"
        observed = "; ".join(f"`{o}`" for o in c.observed)
        lines.append(
            f"| {c.server} | {c.mode} | {'yes' if c.detected else 'NO'} | {latency} "
            f"| {c.sends_after_close} | {observed} |"
        )
    return lines


def render_markdown(results: BakeoffResults, command: str, args: argparse.Namespace) -> str:
    facts = results.facts
    candidates = [f"- **{r.name}**: {r.description}" for r in results.http]
    versions = ", ".join(f"{name} {version}" for name, version in facts["versions"].items())
    load = " -> ".join(" ".join(f"{x:.2f}" for x in la) for la in (facts["loadavg_start"], facts["loadavg_end"]))
    lines = [
        "# KVStore++ HTTP server bake-off",
        "",
        "Generated by `python -m bench.bakeoff`; do not edit by hand, re-run the command instead.",
        "",
        f"- date: {facts['date']}",
        f"- command: `{command}`",
        f"- machine: nproc={facts['nproc']}, {facts['cpu']}, Linux {facts['kernel']}, load average {load}",
        f"- python {facts['python']}; {facts['wrk']}",
        f"- packages: {versions}",
        "",
        "## HTTP: same in-memory KV app on every server",
        "",
        f"`wrk -t1 -c{args.connections} -d{args.duration:g}s --timeout 5s --latency`, keep-alive, 127.0.0.1. "
        f"GET: `GET /kv/{GET_KEY}` (100-byte value). PUT: `PUT /kv/k<n % 10000>` with a 100-byte body "
        f"(wrk Lua script). Each scenario: {args.warmup:g} s warm-up, then {args.repeats} measured runs, each "
        f"after waiting up to {args.quiet_wait:g} s for other work on the machine to use < {QUIET_CORES} cores; "
        "**the table shows the better run** (most req/s) because wrk, the server and any other work share "
        "the machine's 2 cores. procs/threads/RSS: the server's whole process tree after the load.",
        "",
        *candidates,
        "",
        *http_table(results.http),
        "",
        "Every measured run, with the CPU that other work on the machine used meanwhile (total busy CPU "
        "minus wrk, the server and this script, averaged over the run, in cores out of 2):",
        "",
        *runs_table(results.http),
        "",
        f"Largest run-to-run spread between quiet runs (other CPU < {QUIET_CORES} cores): "
        f"{quiet_spread(results.http)}; differences smaller than that are noise on this machine.",
        "",
        "## Micro-benchmarks (timeit, best of 5)",
        "",
        *micro_table(results.micro),
        "",
        "## Streaming: does the handler notice a client that went away?",
        "",
        f"Handler streams `tick\\n` every {CHUNK_INTERVAL_S * 1e3:.0f} ms; a raw-socket client reads 3 chunks and "
        "closes. `send` = handler only keeps sending; `watch` = handler also awaits the disconnect signal. "
        f"Window: {DISCONNECT_WINDOW_S} s. Both servers run in the bake-off process on a uvloop loop.",
        "",
        *streaming_lines(results.streaming),
        "",
    ]
    return "\n".join(lines)


def streaming_lines(report: StreamingReport) -> list[str]:
    return [
        *streaming_table(report),
        "",
        "Embedded server lifecycle (granian `Server`, observed live):",
        "",
        *[f"- {fact}" for fact in report.embedded_lifecycle],
    ]


def to_json(results: BakeoffResults) -> str:
    def server(result: ServerResult) -> dict[str, Any]:
        data = asdict(result)
        data["best"] = {name: asdict(s.best) for name, s in result.scenarios.items()}
        return data

    return json.dumps(
        {
            "meta": results.facts,
            "http": [server(r) for r in results.http],
            "micro": [asdict(m) | {"ops_per_s": m.ops_per_s} for m in results.micro],
            "streaming": asdict(results.streaming),
        },
        indent=2,
    )
