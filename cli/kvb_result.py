"""What one kvb test measured, whichever engine ran it, and the figures derived from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
# A client process (or wrk thread) busier than this share of a core limits the load it can
# offer: the figures then measure the client, and the report says so.
CLIENT_BOUND_CPU = 0.9
# An open-loop run that completes less than this share of its target rate says so.
RATE_SHORTFALL = 0.95


def percentile_name(percentile: float) -> str:
    return f"p{percentile:g}"


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency of successful requests, in milliseconds."""

    count: int
    min_ms: float
    mean_ms: float
    max_ms: float
    percentiles_ms: dict[str, float]

    @classmethod
    def from_histogram(cls, histogram: HdrHistogram) -> Latency:
        """From a histogram of microseconds."""
        count = histogram.get_total_count()
        if count == 0:
            return cls(0, 0.0, 0.0, 0.0, {percentile_name(p): 0.0 for p in PERCENTILES})
        percentiles = {percentile_name(p): histogram.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
        return cls(
            count,
            histogram.get_min_value() / 1000,
            histogram.get_mean_value() / 1000,
            histogram.get_max_value() / 1000,
            percentiles,
        )


@dataclass(frozen=True, slots=True)
class OpResult:
    latency: Latency
    errors: dict[str, int]  # by kind: http_<status>, timeout, connect, closed, bad_response


@dataclass(slots=True)
class RunResult:
    test: str
    engine: str
    connections: int
    duration_s: float  # the measured window, warmup excluded
    rate: float | None  # open loop's target requests/s; None: closed loop
    ops: dict[str, OpResult]
    overall: Latency
    client_cpu: list[float]  # share of one core, per client process (python) or thread (wrk)
    warnings: list[str] = field(default_factory=list)

    def requests(self) -> int:
        return self.overall.count

    def rps(self) -> float:
        """Successful requests per second."""
        return self.overall.count / self.duration_s if self.duration_s > 0 else 0.0

    def errors(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for op in self.ops.values():
            for kind, count in op.errors.items():
                total[kind] = total.get(kind, 0) + count
        return total

    def client_bound(self) -> bool:
        return bool(self.client_cpu) and max(self.client_cpu) >= CLIENT_BOUND_CPU

    def check(self) -> None:
        """Add the warnings a reader must see next to the numbers."""
        if self.client_bound():
            busiest = max(self.client_cpu)
            self.warnings.append(
                f"client-bound: a client {'thread' if self.engine == 'wrk' else 'process'} used {busiest:.0%} "
                "of a core, so this measures kvb as much as the server (more --processes, another machine, "
                "or --engine wrk)"
            )
        if self.rate is not None and self.requests() + sum(self.errors().values()) < RATE_SHORTFALL * (
            self.rate * self.duration_s
        ):
            self.warnings.append(
                f"the target rate was not held: {self.rate:g} requests/s asked, "
                f"{(self.requests() + sum(self.errors().values())) / self.duration_s:.0f} done "
                "(more --concurrency, or the server or client is saturated)"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "engine": self.engine,
            "connections": self.connections,
            "duration_s": self.duration_s,
            "target_rate": self.rate,
            "requests": self.requests(),
            "rps": self.rps(),
            "errors": self.errors(),
            "latency_ms": asdict(self.overall),
            "ops": {
                name: {
                    "requests": op.latency.count,
                    "rps": op.latency.count / self.duration_s if self.duration_s > 0 else 0.0,
                    "errors": op.errors,
                    "latency_ms": asdict(op.latency),
                }
                for name, op in self.ops.items()
            },
            "client": {"cpu_per_process": self.client_cpu, "client_bound": self.client_bound()},
            "warnings": self.warnings,
        }
