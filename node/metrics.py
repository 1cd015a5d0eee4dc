"""Every Prometheus metric the node exports, declared in one place.

Names follow `kvstore_<subsystem>_<what>_<unit>`. All live in `REGISTRY` (not the
global default registry) so tests and several nodes in one process stay apart, and a
test checks that each metric declared here shows up on `/metrics`.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class OperationStats(Collector):
    """Data API operation counts and latencies, kept as plain ints and exported at scrape time.

    The data path is hot (~20 us a request) and only the event loop thread writes here,
    so this skips prometheus_client's per-sample lock and Python bucket loop (~4 us a
    request for a Counter plus a Histogram) and still exports standard families.
    """

    counter_name = "kvstore_kv_operations"
    histogram_name = "kvstore_kv_operation_seconds"

    def __init__(self, buckets_s: tuple[float, ...]) -> None:
        self._bounds = buckets_s
        self._counts: dict[tuple[str, str], int] = {}
        self._buckets: dict[str, list[int]] = {}  # per op: count per bucket, +Inf last
        self._sums: dict[str, float] = {}

    def observe(self, op: str, result: str, seconds: float) -> None:
        key = (op, result)
        self._counts[key] = self._counts.get(key, 0) + 1
        buckets = self._buckets.get(op)
        if buckets is None:
            buckets = self._buckets[op] = [0] * (len(self._bounds) + 1)
            self._sums[op] = 0.0
        buckets[bisect_left(self._bounds, seconds)] += 1
        self._sums[op] += seconds

    def _families(self) -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return (
            CounterMetricFamily(self.counter_name, "Data API operations by kind and result.", labels=["op", "result"]),
            HistogramMetricFamily(
                self.histogram_name, "Data API operation latency inside the node, commit wait included.", labels=["op"]
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        counter, histogram = self._families()
        for (op, result), count in sorted(self._counts.items()):
            counter.add_metric([op, result], count)
        for op, buckets in sorted(self._buckets.items()):
            cumulative: list[tuple[str, float]] = []
            running = 0
            for bound, count in zip((*map(str, self._bounds), "+Inf"), buckets):
                running += count
                cumulative.append((bound, running))
            histogram.add_metric([op], cumulative, self._sums[op])
        yield counter
        yield histogram


KV_OPERATIONS = OperationStats(_LATENCY_BUCKETS_S)
REGISTRY.register(KV_OPERATIONS)
KEY_COUNT = Gauge("kvstore_key_count", "Keys in the store (expired keys not yet removed included).", registry=REGISTRY)
STORE_KEYS = Gauge(
    "kvstore_store_keys", "Alias of kvstore_key_count, kept for existing dashboards and rules.", registry=REGISTRY
)
MEMORY_USAGE_BYTES = Gauge(
    "kvstore_memory_usage_bytes",
    "Memory by kind: store_estimate (the store's keys, entries and indexes, from sys.getsizeof of a "
    "sample of entries times the key count), rss (the process' resident set, /proc/self/statm).",
    ["kind"],
    registry=REGISTRY,
)
STORE_REVISION = Gauge("kvstore_store_revision", "Highest version applied to the store.", registry=REGISTRY)
TTL_EXPIRED_KEYS = Counter(
    "kvstore_ttl_expired_keys_total", "Keys removed by the expirer (each logged as DEL).", registry=REGISTRY
)


class CounterFunction(Collector):
    """A counter whose value is read at scrape time from a plain int its owner keeps
    (for counts bumped on every write, where a prometheus_client Counter's lock costs)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self._read: Callable[[], float] = lambda: 0.0

    def bind(self, read: Callable[[], float]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self._read())


WAL_WRITTEN_BYTES = CounterFunction("kvstore_wal_written_bytes", "Bytes written to WAL segments.")
REGISTRY.register(WAL_WRITTEN_BYTES)
WAL_FSYNC_SECONDS = Histogram(
    "kvstore_wal_fsync_seconds", "Time one WAL fsync took.", buckets=_LATENCY_BUCKETS_S, registry=REGISTRY
)
WAL_COMMIT_BATCH_RECORDS = Histogram(
    "kvstore_wal_commit_batch_records",
    "Records made durable by one flush (group commit batch size).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
    registry=REGISTRY,
)
WAL_END_LSN = Gauge("kvstore_wal_end_lsn_bytes", "Byte position where the next WAL record goes.", registry=REGISTRY)
WAL_SIZE_BYTES = Gauge("kvstore_wal_size_bytes", "Bytes held in WAL segment files.", registry=REGISTRY)
WAL_DISK_FREE_BYTES = Gauge(
    "kvstore_wal_disk_free_bytes",
    "Bytes free for the node on the file system holding the WAL directory (statvfs f_bavail).",
    registry=REGISTRY,
)
WAL_DISK_SIZE_BYTES = Gauge(
    "kvstore_wal_disk_size_bytes", "Size of the file system holding the WAL directory.", registry=REGISTRY
)
CHECKPOINT_SECONDS = Histogram(
    "kvstore_checkpoint_seconds",
    "Duration of a checkpoint (snapshot, control update, WAL recycling).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
CHECKPOINTS = Counter("kvstore_checkpoints_total", "Checkpoints by result.", ["result"], registry=REGISTRY)
AUTH_FAILURES = Counter(
    "kvstore_auth_failures_total", "Rejected authentications by reason.", ["reason"], registry=REGISTRY
)
EVENT_LOOP_LAG_SECONDS = Histogram(
    "kvstore_event_loop_lag_seconds",
    "How late a timer on the event loop fired: the longest any request could have waited for the loop.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)
COMMIT_WAITERS = Gauge(
    "kvstore_engine_commit_waiters", "Requests waiting for an LSN to commit (read at scrape time).", registry=REGISTRY
)
WATCHERS = Gauge("kvstore_watchers", "GET /v1/watch streams this node serves.", registry=REGISTRY)
WATCH_CUTOFFS = Counter(
    "kvstore_watch_cutoffs_total", "Watch streams the node ended on its own, by reason.", ["reason"], registry=REGISTRY
)
CATALOG_DAMAGED_DOCUMENTS = Gauge(
    "kvstore_catalog_damaged_documents",
    "Catalog documents that fail their check and are ignored (listed in /v1/status).",
    registry=REGISTRY,
)
HTTP_REQUESTS_IN_FLIGHT = Gauge(
    "kvstore_http_requests_in_flight", "HTTP requests being handled now (read at scrape time).", registry=REGISTRY
)
HTTP_REJECTED = Counter(
    "kvstore_http_rejected_total", "Requests refused before handling, by reason.", ["reason"], registry=REGISTRY
)

REPLICATION_SENT_BYTES = Counter(
    "kvstore_replication_sent_bytes_total",
    "Stream bytes sent to replicas (primary), by where the WAL was read: memory (live tail) or disk.",
    ["source"],
    registry=REGISTRY,
)
NODE_FENCED = Gauge(
    "kvstore_node_fenced",
    "1 while this node refuses writes because a newer timeline superseded it (kvctl rejoin ends it).",
    registry=REGISTRY,
)
REPLICATION_SLOTS = Gauge(
    "kvstore_replication_slots",
    "The primary's replication slots by state: streaming, disconnected, lost (its WAL is gone: "
    "the replica needs a new base backup).",
    ["state"],
    registry=REGISTRY,
)
REPLICATION_RECEIVED_BYTES = Counter(
    "kvstore_replication_received_bytes_total", "WAL bytes received from the primary (replica).", registry=REGISTRY
)
SYNC_COMMIT_WAIT_SECONDS = Histogram(
    "kvstore_sync_commit_wait_seconds",
    "How long a write waited for synchronous replicas after its local commit.",
    buckets=_LATENCY_BUCKETS_S,
    registry=REGISTRY,
)


class ReplicaLag(Collector):
    """Per-replica lag, read at scrape time from the primary's slots (or a replica's own view)."""

    def __init__(self) -> None:
        self._read: Callable[[], list[tuple[str, float, float]]] = list  # (replica, bytes, seconds)

    def bind(self, read: Callable[[], list[tuple[str, float, float]]]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        return iter(self._families([]))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self._read()))

    @staticmethod
    def _families(rows: list[tuple[str, float, float]]) -> list[Metric]:
        lag_bytes = GaugeMetricFamily(
            "kvstore_replication_lag_bytes", "WAL committed on the primary, not yet applied.", labels=["replica"]
        )
        lag_seconds = GaugeMetricFamily(
            "kvstore_replication_lag_seconds",
            "Time since the primary committed the oldest change a replica has not applied (0 when caught up).",
            labels=["replica"],
        )
        for name, behind_bytes, behind_s in rows:
            lag_bytes.add_metric([name], behind_bytes)
            lag_seconds.add_metric([name], behind_s)
        return [lag_bytes, lag_seconds]


REPLICATION_LAG = ReplicaLag()
REGISTRY.register(REPLICATION_LAG)


class ConnectionsActive(Collector):
    """Open HTTP connections by role, counted at scrape time (node/api/connections.py)."""

    name = "kvstore_connections_active"
    documentation = (
        "TCP connections open on the node's HTTP listeners (kernel's table, listen backlog included), by the "
        "roles of the last authenticated request on each (comma-joined); anonymous: none authenticated yet."
    )

    def __init__(self) -> None:
        self._read: Callable[[], Mapping[str, int]] = lambda: {"anonymous": 0}

    def bind(self, read: Callable[[], Mapping[str, int]]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=["role"])

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=["role"])
        for role, count in sorted(self._read().items()):
            family.add_metric([role], count)
        yield family


CONNECTIONS_ACTIVE = ConnectionsActive()
REGISTRY.register(CONNECTIONS_ACTIVE)

# -- login defences (issue 10): the password hashing pool and the audit log's aggregation --
LOGIN_HASHES_PENDING = Gauge(
    "kvstore_login_hashes_pending",
    "Password hashes running or waiting in the hashing pool (login_hash_threads + login_queue_max at most).",
    registry=REGISTRY,
)
LOGIN_HASHES = Counter(
    "kvstore_login_hashes_total",
    "Password hashes and verifications run by the hashing pool (each costs argon2's time and memory).",
    registry=REGISTRY,
)
AUDIT_REFUSALS = Counter(
    "kvstore_audit_refusals_total",
    "Refused unauthenticated requests given to the audit log, by how they were written: "
    "line (in full), aggregated (counted in a refusals_aggregated line), unlogged (beyond the window's budget).",
    ["written"],
    registry=REGISTRY,
)
for _written in ("line", "aggregated", "unlogged"):
    AUDIT_REFUSALS.labels(_written)


# Known label values exist from the first scrape, so rates and alerts work before any event.
for _reason in (
    "missing",
    "malformed",
    "bad_credentials",
    "throttled",
    "expired",
    "invalid_token",
    "revoked",
    "forbidden",
    "address",
    "host_rules",
    "login_busy",
):
    AUTH_FAILURES.labels(_reason)
for _reason in ("in_flight_limit", "body_too_large", "length_required"):
    HTTP_REJECTED.labels(_reason)
# Connection limits (rsgi.py): refusals made from a request's headers, and the body memory held.
HTTP_BODY_BYTES_IN_FLIGHT = Gauge(
    "kvstore_http_body_bytes_in_flight",
    "Bytes of request bodies announced by requests being handled now (max_body_bytes_in_flight).",
    registry=REGISTRY,
)
for _reason in ("address_in_flight_limit", "body_bytes_in_flight_limit", "body_timeout", "body_incomplete"):
    HTTP_REJECTED.labels(_reason)
for _source in ("memory", "disk"):
    REPLICATION_SENT_BYTES.labels(_source)
for _result in ("ok", "failed"):
    CHECKPOINTS.labels(_result)
for _state in ("streaming", "disconnected", "lost"):
    REPLICATION_SLOTS.labels(_state)

# -- continuous archiving (node/archive/archiver.py), on a primary with archive_url set --
ARCHIVE_BYTES = Counter(
    "kvstore_archive_bytes", "Bytes uploaded to the archive, by kind of object.", ["kind"], registry=REGISTRY
)
ARCHIVE_FAILURES = Counter(
    "kvstore_archive_failures",
    "Archive operations that failed (retried), by operation.",
    ["operation"],
    registry=REGISTRY,
)
ARCHIVE_LAG_BYTES = Gauge(
    "kvstore_archive_lag_bytes", "WAL written but not archived yet (the open segment included).", registry=REGISTRY
)
ARCHIVE_LAG_SECONDS = Gauge(
    "kvstore_archive_lag_seconds", "How long the oldest WAL not archived yet has waited.", registry=REGISTRY
)
ARCHIVE_LAST_ARCHIVED = Gauge(
    "kvstore_archive_last_archived_timestamp_seconds", "When the last WAL segment was archived.", registry=REGISTRY
)
ARCHIVE_LAST_SNAPSHOT = Gauge(
    "kvstore_archive_last_snapshot_timestamp_seconds", "When the last snapshot was archived.", registry=REGISTRY
)
ARCHIVE_ALARM = Gauge(
    "kvstore_archive_alarm",
    "1 while the archive cannot restore to now: WAL past archive_max_retained_bytes was recycled unarchived "
    "(a gap, until a later snapshot is archived) or is about to be.",
    registry=REGISTRY,
)
for _kind in ("wal", "snapshot", "history"):
    ARCHIVE_BYTES.labels(_kind)
for _operation in ("wal", "snapshot", "history", "retention", "setup"):
    ARCHIVE_FAILURES.labels(_operation)
WATCH_CUTOFFS.labels("slow_watcher")


def bind_gauge(gauge: Gauge, read: Callable[[], float]) -> None:
    """Have `gauge` read its value at scrape time instead of on every change."""
    gauge.set_function(read)


def rss_bytes() -> float:
    """The process' resident set: /proc/self/statm's second field is in pages."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
bind_gauge(MEMORY_USAGE_BYTES.labels("rss"), rss_bytes)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
