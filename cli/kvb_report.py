"""kvb's outputs: the text report, PREFIX.json (every figure) and PREFIX.csv (redis-benchmark's columns)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .kvb_result import Latency, RunResult

# redis-benchmark --csv's columns, one row per test.
CSV_COLUMNS = (
    "test",
    "rps",
    "avg_latency_ms",
    "min_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "max_latency_ms",
)


def _latency_line(latency: Latency) -> str:
    p = latency.percentiles_ms
    return (
        f"min {latency.min_ms:.3f}  mean {latency.mean_ms:.3f}  p50 {p['p50']:.3f}  p90 {p['p90']:.3f}  "
        f"p99 {p['p99']:.3f}  p99.9 {p['p99.9']:.3f}  max {latency.max_ms:.3f}"
    )


def text(runs: Sequence[RunResult], url: str) -> str:
    out = io.StringIO()
    for run in runs:
        mode = f"open loop at {run.rate:g} requests/s" if run.rate is not None else "closed loop"
        out.write(
            f"== {run.test}  {url}  engine {run.engine}, {run.connections} connections, {mode}, "
            f"{run.duration_s:.1f} s\n"
        )
        errors = run.errors()
        error_text = ", ".join(f"{kind} {count}" for kind, count in sorted(errors.items())) or "none"
        out.write(f"  requests/s {run.rps():,.0f}   requests {run.requests():,}   errors {error_text}\n")
        out.write(f"  latency ms  {_latency_line(run.overall)}\n")
        if len(run.ops) > 1:
            for name, op in run.ops.items():
                rate = op.latency.count / run.duration_s if run.duration_s > 0 else 0.0
                out.write(f"  {name:<4} {rate:>10,.0f}/s  {_latency_line(op.latency)}\n")
        cpu = ", ".join(f"{share:.0%}" for share in run.client_cpu)
        out.write(f"  client CPU per {'thread' if run.engine == 'wrk' else 'process'}: {cpu}\n")
        for warning in run.warnings:
            out.write(f"  WARNING {warning}\n")
    return out.getvalue()


def csv_rows(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    return [
        {
            "test": run.test,
            "rps": round(run.rps(), 2),
            "avg_latency_ms": round(run.overall.mean_ms, 3),
            "min_latency_ms": round(run.overall.min_ms, 3),
            "p50_latency_ms": round(run.overall.percentiles_ms["p50"], 3),
            "p95_latency_ms": round(run.overall.percentiles_ms["p95"], 3),
            "p99_latency_ms": round(run.overall.percentiles_ms["p99"], 3),
            "max_latency_ms": round(run.overall.max_ms, 3),
        }
        for run in runs
    ]


def write(prefix: str, runs: Sequence[RunResult], settings: dict[str, Any]) -> tuple[Path, Path]:
    """PREFIX.json and PREFIX.csv; returns their paths."""
    json_path, csv_path = Path(f"{prefix}.json"), Path(f"{prefix}.csv")
    document = {"settings": settings, "tests": [run.as_dict() for run in runs]}
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    with csv_path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(runs))
    return json_path, csv_path
