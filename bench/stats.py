"""Summaries the benchmarks print."""

from __future__ import annotations


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at `fraction` (0.99: p99) of the sorted samples, nearest rank; NaN for none."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")
