"""Where the benchmarks write their results: bench/results/ in the repository they run from.

Found from this file, which is never installed (the wheel holds no bench/), so a run from a
checkout writes into that checkout, whatever kvstore is installed in the environment."""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = REPOSITORY / "bench" / "results"


def results_file(name: str) -> Path:
    """bench/results/RESULTS-<name>.md"""
    return RESULTS / f"RESULTS-{name}.md"
