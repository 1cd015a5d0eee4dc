"""A run's results as DIR/report.json (for machines) and DIR/report.html (for people: one
self-contained page, no external script or style, with an SVG timeline per run)."""

from __future__ import annotations

import json
import time
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from .history import Op, OpKind, Outcome
from .runner import RunResult

TIMELINE_BUCKETS_MAX = 150
TIMELINE_BUCKET_S_MIN = 0.25
# The SVG's drawing area, in pixels.
CHART_WIDTH, CHART_HEIGHT, CHART_MARGIN = 960, 240, 64
LANE_HEIGHT = 16  # one lane of fault marks per kind of fault, under the chart
MAX_FAULT_LABELS = 12  # more labels above the chart would overlap; the lanes name them all
COLOURS = {"ok": "#2e7d32", "failed": "#c62828", "unknown": "#ef6c00", "fault": "#1565c0"}


def write_reports(directory: Path, results: list[RunResult]) -> dict[str, Any]:
    document = {
        "passed": bool(results) and all(result.passed for result in results),
        "runs": [run_document(r) for r in results],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(document, indent=2) + "\n")
    (directory / "report.html").write_text(render_html(document))
    return document


def run_document(result: RunResult) -> dict[str, Any]:
    ops = result.history.ops
    counts = Counter((op.kind, op.outcome) for op in ops)
    durability = next((v for v in result.verdicts if v.name == "durability"), None)
    return {
        "scenario": result.scenario.name,
        "summary": result.scenario.summary,
        "backend": result.backend,
        "seed": result.seed,
        "duration_s": result.duration_s,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started_at)),
        "wall_s": round(result.wall_s, 3),
        "passed": result.passed,
        "error": result.error,
        "ops": {
            "acknowledged": counts[OpKind.WRITE, Outcome.OK],
            "failed": counts[OpKind.WRITE, Outcome.FAILED],
            "unknown": counts[OpKind.WRITE, Outcome.UNKNOWN],
            "reads": {str(outcome): counts[OpKind.READ, outcome] for outcome in Outcome},
        },
        "faults": [fault.to_json() for fault in result.history.faults],
        "lost_write_count": durability.details["lost_write_count"] if durability else None,
        "lost_writes": durability.details["lost_writes"] if durability else None,
        "recovery_s": result.recovery_s,
        "recovery_s_max": max(result.recovery_s, default=None),
        "promotion_s": result.promotion_s,
        "promotion_s_max": max(result.promotion_s, default=None),
        "fault_counts": dict(Counter(fault.kind for fault in result.history.faults)),
        "checkers": [verdict.to_json() for verdict in result.verdicts],
        "timeline": timeline(ops, result.wall_s),
    }


def timeline(ops: list[Op], wall_s: float) -> dict[str, Any]:
    """Operations finished per second, by outcome, in equal time buckets."""
    bucket_s = max(TIMELINE_BUCKET_S_MIN, wall_s / TIMELINE_BUCKETS_MAX)
    buckets = int(wall_s / bucket_s) + 1
    series = {str(outcome): [0.0] * buckets for outcome in Outcome}
    for op in ops:
        series[str(op.outcome)][min(buckets - 1, int(op.end_s / bucket_s))] += 1 / bucket_s
    return {
        "bucket_s": round(bucket_s, 3),
        **{name: [round(rate, 1) for rate in rates] for name, rates in series.items()},
    }


# -- HTML -------------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h2 { margin-top: 2em; } .pass { color: #2e7d32; } .fail { color: #c62828; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
pre { white-space: pre-wrap; max-height: 20em; overflow: auto; background: #f6f6f6; padding: 0.5em; }
"""


def render_html(document: dict[str, Any]) -> str:
    verdict = _verdict(document["passed"])
    runs = "\n".join(_run_html(run) for run in document["runs"])
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>kvchaos report</title><style>{STYLE}</style></head>"
        f"<body><h1>kvchaos: {verdict}</h1>{_summary_table(document['runs'])}{runs}</body></html>\n"
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in counts.items())


def _or_dash(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _verdict(passed: bool) -> str:
    return "<span class='pass'>PASS</span>" if passed else "<span class='fail'>FAIL</span>"


def _summary_table(runs: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>scenario</th><th>result</th><th>acknowledged</th><th>failed</th><th>unknown</th><th>lost</th>"
        "<th>faults</th><th>worst recovery s</th><th>worst promotion s</th></tr>"
    )
    rows = "".join(
        f"<tr><td><a href='#{escape(run['scenario'])}'>{escape(run['scenario'])}</a></td><td>{_verdict(run['passed'])}</td>"
        f"<td>{run['ops']['acknowledged']}</td><td>{run['ops']['failed']}</td><td>{run['ops']['unknown']}</td>"
        f"<td>{run['lost_write_count']}</td><td>{escape(_counts(run['fault_counts']))}</td>"
        f"<td>{_or_dash(run['recovery_s_max'])}</td><td>{_or_dash(run['promotion_s_max'])}</td></tr>"
        for run in runs
    )
    return f"<table>{head}{rows}</table>"


def _run_html(run: dict[str, Any]) -> str:
    checkers = "".join(
        f"<tr><td>{escape(v['name'])}</td><td>{_verdict(v['passed'])}</td><td>{escape(v['summary'])}</td>"
        f"<td>{_details(v)}</td></tr>"
        for v in run["checkers"]
    )
    faults = "".join(
        f"<tr><td>{escape(f['kind'])}</td><td>{escape(f['node'])}</td><td>{f['start_s']:.2f}</td>"
        f"<td>{'' if f['end_s'] is None else format(f['end_s'], '.2f')}</td><td>{escape(json.dumps(f['detail']))}</td></tr>"
        for f in run["faults"]
    )
    error = f"<p class='fail'>The run broke:</p><pre>{escape(run['error'])}</pre>" if run["error"] else ""
    return (
        f"<h2 id='{escape(run['scenario'])}'>{escape(run['scenario'])}: {_verdict(run['passed'])}</h2>"
        f"<p>{escape(run['summary'])}. Backend {escape(run['backend'])}, seed {run['seed']}, started {run['started_at']}, "
        f"{run['wall_s']} s.</p>{error}{_chart(run)}"
        f"<table><tr><th>checker</th><th>result</th><th>summary</th><th>details</th></tr>{checkers}</table>"
        + _fold(
            f"<table><tr><th>fault</th><th>node</th><th>start s</th><th>end s</th><th>detail</th></tr>{faults}</table>",
            f"{len(run['faults'])} faults",
            len(run["faults"]) > MAX_FAULT_LABELS,
        )
    )


def _fold(html: str, summary: str, folded: bool) -> str:
    return f"<details><summary>{escape(summary)}</summary>{html}</details>" if folded else html


def _details(verdict: dict[str, Any]) -> str:
    if verdict["passed"] or not verdict["details"]:
        return ""
    return f"<details><summary>show</summary><pre>{escape(json.dumps(verdict['details'], indent=1))}</pre></details>"


def _chart(run: dict[str, Any]) -> str:
    """Throughput (ok), errors (failed, unknown) per second, the faults as bands over it and,
    under it, one lane per kind of fault with a mark for each."""
    series = run["timeline"]
    bucket_s = series["bucket_s"]
    span_s = max(run["wall_s"], bucket_s)
    peak = max([1.0, *series["ok"], *series["failed"], *series["unknown"]])
    kinds = list(dict.fromkeys(fault["kind"] for fault in run["faults"]))
    width, height, margin = CHART_WIDTH, CHART_HEIGHT, CHART_MARGIN
    lanes_top = margin + height + 22
    legend_top = lanes_top + len(kinds) * LANE_HEIGHT + 8

    def x(seconds: float) -> float:
        return margin + seconds / span_s * width

    def y(rate: float) -> float:
        return margin + height - rate / peak * height

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width + 2 * margin}' height='{legend_top + 16}' "
        f"font-size='11' role='img' aria-label='operations per second over time'>",
        f"<rect x='{margin}' y='{margin}' width='{width}' height='{height}' fill='none' stroke='#999'/>",
    ]
    for lane, kind in enumerate(kinds):
        top = lanes_top + lane * LANE_HEIGHT
        parts.append(f"<text x='{margin - 4}' y='{top + 11}' text-anchor='end'>{escape(kind)}</text>")
        parts.append(f"<line x1='{margin}' x2='{margin + width}' y1='{top + 7}' y2='{top + 7}' stroke='#ddd'/>")
    for fault in run["faults"]:
        start = x(fault["start_s"])
        end = max(start + 2, x(fault["end_s"] if fault["end_s"] is not None else fault["start_s"]))
        label = escape(f"{fault['kind']} {fault['node']}")
        top = lanes_top + kinds.index(fault["kind"]) * LANE_HEIGHT
        parts.append(
            f"<rect x='{start:.1f}' y='{margin}' width='{end - start:.1f}' height='{height}' fill='{COLOURS['fault']}' fill-opacity='0.18'><title>{label}</title></rect>"
        )
        parts.append(
            f"<rect x='{start:.1f}' y='{top + 2}' width='{end - start:.1f}' height='10' fill='{COLOURS['fault']}'><title>{label} at {fault['start_s']:.1f} s</title></rect>"
        )
        if len(run["faults"]) <= MAX_FAULT_LABELS:
            parts.append(
                f"<text x='{start + 2:.1f}' y='{margin - 4}' fill='{COLOURS['fault']}' transform='rotate(-20 {start + 2:.1f} {margin - 4})'>{label}</text>"
            )
    for name in ("ok", "failed", "unknown"):
        points = " ".join(f"{x((i + 0.5) * bucket_s):.1f},{y(rate):.1f}" for i, rate in enumerate(series[name]))
        parts.append(f"<polyline points='{points}' fill='none' stroke='{COLOURS[name]}' stroke-width='1.5'/>")
    for tick in range(5):
        rate = peak * tick / 4
        parts.append(f"<text x='{margin - 4}' y='{y(rate) + 4:.1f}' text-anchor='end'>{rate:.0f}</text>")
    step_s = max(1, round(span_s / 10))
    for second in range(0, int(span_s) + 1, step_s):
        parts.append(f"<text x='{x(second):.1f}' y='{margin + height + 14}' text-anchor='middle'>{second}s</text>")
    legend = [
        ("ok", "acknowledged / answered per s"),
        ("failed", "failed per s"),
        ("unknown", "unknown per s"),
        ("fault", "fault"),
    ]
    for index, (name, text) in enumerate(legend):
        left = margin + index * 220
        parts.append(f"<rect x='{left}' y='{legend_top}' width='12' height='8' fill='{COLOURS[name]}'/>")
        parts.append(f"<text x='{left + 16}' y='{legend_top + 8}'>{escape(text)}</text>")
    parts.append("</svg>")
    return "<div>" + "".join(parts) + "</div>"
