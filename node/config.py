"""Node settings: defaults < `config.toml` < `KVSTORE_*` environment < command-line flags.

Every limit the node enforces is a named setting here, with its unit last.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import auth_policy
from .auth_policy import AuthPolicy
from .wal.format import MAX_PAYLOAD_BYTES
from .wal.policy import FsyncPolicy

ENV_PREFIX = "KVSTORE_"
# Secrets are read from the environment or a file only, never from flags or config.toml.
_SECRET_FIELDS = {"admin_password", "replication_password", "cluster_key", "cluster_key_previous", "archive_key"}
SYNCHRONOUS_COMMIT_MODES = ("local", "remote_write", "remote_apply")


class ConfigError(Exception):
    pass


def host_port(setting: str, text: str) -> tuple[str, int]:
    """(host, port) of a `HOST:PORT` setting (IPv6 hosts in brackets)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{setting}: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    listen: str = "127.0.0.1:8080"
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval_ms: int = 1000
    wal_segment_size_bytes: int = 16 * 1024 * 1024
    checkpoint_interval_s: float = 300.0
    checkpoint_wal_bytes: int = 256 * 1024 * 1024  # checkpoint early when this much WAL piles up
    snapshots_keep: int = 2
    max_key_bytes: int = 1024
    max_value_bytes: int = 1024 * 1024
    max_body_bytes: int = 8 * 1024 * 1024
    max_txn_ops: int = 1000
    max_scan_limit: int = 10_000
    # Keys one listing may examine (shown or hidden from the caller by its grants), then it
    # answers with what it found and a cursor; and how many such cursors a node keeps.
    max_scan_examined_keys: int = 20_000
    listing_cursors_max: int = 10_000
    max_requests_in_flight: int = 4096
    max_watchers: int = 256  # GET /v1/watch streams a node serves at once; 429 beyond
    # A watcher whose client takes nothing of what it was sent for this long is cut off.
    watch_stall_timeout_s: float = 30.0
    max_ttl_s: int = 10 * 365 * 24 * 3600
    # How long the answer to a write sent with an Idempotency-Key is remembered (idempotency.py):
    # a retry within it gets that answer again; one small system key per such write until then.
    # Minutes, not Stripe's day: clients retry within seconds, a failover within a minute, and
    # a counter bumped 1,000 times a second holds 1,000 x this many answers.
    idempotency_ttl_s: int = 600
    expire_interval_ms: int = 100
    expire_batch_keys: int = 1000
    # The cluster's auth policy (auth_policy.py) as initdb writes it to `_sys.settings:auth`;
    # from then on the catalog's document is the one in force (`kvctl settings set`).
    token_ttl_s: int = 3600
    password_min_length: int = 8
    password_hash_time_cost: int = 3
    password_hash_memory_kib: int = 64 * 1024
    password_hash_parallelism: int = 4
    login_max_failures: int = 5
    login_failure_window_s: int = 300
    login_lockout_s: int = 300
    login_user_slowdown_after_failures: int = 20
    login_user_slowdown_max_s: int = 60
    audit_log_max_bytes: int = 10 * 1024 * 1024
    audit_log_keep: int = 5
    # -- login defences (issue 10); this node's resources, so node settings, not the auth policy --
    login_hash_threads: int = 2  # threads of the password hashing pool (never the default executor)
    login_queue_max: int = 8  # hashes that may wait for a thread (~1 s of work); beyond it 429 at once
    audit_refusal_window_s: float = 10.0  # refusals (bad logins, throttled, host rules) aggregated per window
    audit_refusal_window_max_lines: int = 20  # refusals written in full per window; the rest only counted
    admin_password: str | None = field(default=None, repr=False)
    admin_password_file: Path | None = None
    http_runtime_threads: int = 2
    # Replication. `name` is this node's slot name on its primary and what
    # synchronous_replicas lists; it defaults to kvstored-<port>.
    name: str = ""
    replica_of: str | None = None  # the primary's URL: this node is a replica
    peers: str = ""  # comma-separated URLs of the other nodes, asked for newer timelines (fencing)
    replication_user: str | None = None
    replication_password: str | None = field(default=None, repr=False)
    synchronous_commit: str = "local"  # local | remote_write | remote_apply
    synchronous_replicas: str = ""  # "ANY 1 (r1, r2)"
    synchronous_commit_timeout_s: float = 0.0  # 0: wait for the replicas as long as it takes
    max_slot_wal_keep_bytes: int = 1024**3
    replication_keepalive_s: float = 1.0
    min_lsn_wait_s: float = 5.0  # how long a read with X-KV-Min-LSN may wait on a replica
    shutdown_timeout_s: float = 30.0
    # The cluster key (node/cluster_key.py): 32 random bytes, hex or base64, the same on every
    # node; it seals the token signing secrets the catalog replicates. KVSTORE_CLUSTER_KEY
    # (environment only) or a file of mode 0600; with neither, <data_dir>/cluster.key, which a
    # primary generates when it is missing. During a key rotation, the old key in
    # KVSTORE_CLUSTER_KEY_PREVIOUS (environment only) still opens secrets sealed under it.
    cluster_key: str | None = field(default=None, repr=False)
    cluster_key_file: Path | None = None
    cluster_key_previous: str | None = field(default=None, repr=False)
    log_level: str = "info"
    # Connection limits: what clients may hold of the HTTP listener (README, "Connection limits").
    # granian takes a connection permit per open connection, idle or not, before Python sees a
    # byte: beyond max_connections new connections wait in the listen backlog. The node raises
    # its open-files limit to the hard limit and refuses to start when max_connections does not fit.
    max_connections: int = 10_000
    listen_backlog: int = 1024
    # The time a client has to send a request's headers: a new connection's first request and an
    # idle keep-alive connection's next one alike (granian has one timer for both).
    http_header_timeout_ms: int = 10_000
    # The time a client has to send a request's body once its headers are in: 408 beyond it.
    http_body_timeout_ms: int = 10_000
    # Requests one client address may have in flight (429 beyond it, before any body is read);
    # the exempt addresses, superusers and the operator listener are not held to it.
    max_requests_in_flight_per_address: int = 64
    limits_exempt_addresses: str = "127.0.0.1,::1"
    # Requests beyond max_requests_in_flight still let in for /health, /ready, /metrics and a
    # superuser's admin API, so an operator can look and act while the node is at its limit.
    operator_reserved_requests: int = 32
    # Request bodies held in memory at once, by their declared Content-Length (503 beyond it).
    max_body_bytes_in_flight: int = 64 * 1024 * 1024
    # The largest valid login body (256 + 1024 characters, each up to 6 bytes as a JSON escape) fits.
    max_login_body_bytes: int = 8192
    # A second listener (HOST:PORT, "" for none) with its own connection permits, for operators to
    # reach /health, /metrics and the admin API while the main listener is full.
    operator_listen: str = ""
    operator_max_connections: int = 64
    # Continuous archiving (README, "Backups"): a primary pushes every completed WAL segment, its
    # timeline history and, every archive_snapshot_interval_s, a snapshot to this object store.
    archive_url: str | None = None  # s3://bucket/prefix or file:///absolute/path; None: off
    # A segment with writes is closed after this long, so the archive is never further behind.
    archive_timeout_s: float = 60.0
    archive_snapshot_interval_s: float = 3600.0
    archive_keep_snapshots: int = 7  # older snapshots, and the WAL only they need, are deleted
    # WAL kept on disk for an archive that cannot take it (the store is down): past this much the
    # oldest unarchived segments are recycled anyway (an alarm, and a gap the next snapshot
    # closes) rather than the disk filling up.
    archive_max_retained_bytes: int = 4 * 1024**3
    # Client-side encryption of archived objects (AES-256-GCM): a 32-byte key, hex or base64, from
    # KVSTORE_ARCHIVE_KEY (environment only) or a file of mode 0600.
    archive_key: str | None = field(default=None, repr=False)
    archive_key_file: Path | None = None
    # Start from an archive: an empty data directory is first restored from this URL (its latest
    # point), as `kvctl restore` does; a data directory that exists is started as it is.
    restore_from: str | None = None

    @property
    def node_name(self) -> str:
        return self.name or f"kvstored-{self.listen_port}"

    @property
    def peer_urls(self) -> tuple[str, ...]:
        return tuple(url.strip().rstrip("/") for url in self.peers.split(",") if url.strip())

    @property
    def sync_replicas(self) -> tuple[int, tuple[str, ...]]:
        """`ANY n (a, b)` as (n, names); (0, ()) when none are named."""
        return parse_synchronous_replicas(self.synchronous_replicas)

    @property
    def initial_auth_policy(self) -> AuthPolicy:
        """The auth policy initdb writes; the catalog's is the one in force afterwards."""
        return AuthPolicy(**{name: getattr(self, name) for name in auth_policy.FIELDS})

    @property
    def limits_exempt(self) -> frozenset[str]:
        return frozenset(address.strip() for address in self.limits_exempt_addresses.split(",") if address.strip())

    @property
    def listen_host(self) -> str:
        return host_port("listen", self.listen)[0]

    @property
    def listen_port(self) -> int:
        return host_port("listen", self.listen)[1]

    @property
    def operator_address(self) -> tuple[str, int] | None:
        return host_port("operator_listen", self.operator_listen) if self.operator_listen else None

    def validate(self) -> Settings:
        host_port("listen", self.listen)
        if self.operator_listen:
            host_port("operator_listen", self.operator_listen)
        minimums = {
            "fsync_interval_ms": 1,
            "wal_segment_size_bytes": 4096,
            "checkpoint_interval_s": 1,
            "checkpoint_wal_bytes": 4096,
            "snapshots_keep": 1,
            "max_key_bytes": 1,
            "max_value_bytes": 1,
            "max_body_bytes": 1024,
            "max_txn_ops": 1,
            "max_scan_limit": 1,
            "listing_cursors_max": 1,
            "max_requests_in_flight": 1,
            "max_watchers": 1,
            "watch_stall_timeout_s": 0.1,
            "max_ttl_s": 1,
            "idempotency_ttl_s": 1,
            "expire_interval_ms": 1,
            "expire_batch_keys": 1,
            "audit_log_max_bytes": 4096,
            "audit_log_keep": 1,
            "login_hash_threads": 1,
            "login_queue_max": 0,
            "audit_refusal_window_s": 0.1,
            "audit_refusal_window_max_lines": 1,
            "http_runtime_threads": 1,
            "max_slot_wal_keep_bytes": 0,
            "replication_keepalive_s": 0.05,
            "min_lsn_wait_s": 0,
            "synchronous_commit_timeout_s": 0,
            "max_connections": 1,
            "listen_backlog": 1,
            "http_header_timeout_ms": 100,
            "http_body_timeout_ms": 100,
            "max_requests_in_flight_per_address": 1,
            "max_login_body_bytes": 256,
            "operator_max_connections": 1,
            "operator_reserved_requests": 0,
            "archive_timeout_s": 1,
            "archive_snapshot_interval_s": 1,
            "archive_keep_snapshots": 1,
            "archive_max_retained_bytes": 0,
        }
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ConfigError(f"{name}: {getattr(self, name)} is below the minimum {minimum}")
        if self.wal_segment_size_bytes > 1024**3:
            raise ConfigError("wal_segment_size_bytes: at most 1 GiB")
        # One WAL record carries at most a whole request body; keep it well inside the frame limit.
        for name in ("max_value_bytes", "max_body_bytes"):
            if getattr(self, name) > MAX_PAYLOAD_BYTES // 2:
                raise ConfigError(f"{name}: at most {MAX_PAYLOAD_BYTES // 2} (half the WAL record limit)")
        try:
            auth_policy.from_document(self.initial_auth_policy.to_document())
        except auth_policy.PolicyError as error:
            raise ConfigError(str(error)) from None
        if self.synchronous_commit not in SYNCHRONOUS_COMMIT_MODES:
            raise ConfigError(
                f"synchronous_commit: {self.synchronous_commit!r} is not one of local, remote_write, remote_apply"
            )
        count, names = self.sync_replicas
        if self.synchronous_commit != "local" and count == 0:
            raise ConfigError("synchronous_commit needs synchronous_replicas, such as 'ANY 1 (r1, r2)'")
        if self.name and not NODE_NAME.match(self.name):
            raise ConfigError(f"name: {self.name!r} must be 1-64 of letters, digits, '_', '.', '-'")
        if self.replica_of is not None and not self.replica_of.startswith(("http://", "https://")):
            raise ConfigError(f"replica_of: {self.replica_of!r} is not an http(s) URL")
        if self.max_scan_examined_keys < self.max_scan_limit:
            raise ConfigError("max_scan_examined_keys must be at least max_scan_limit (a full page must be reachable)")
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise ConfigError("max_body_bytes_in_flight must be at least max_body_bytes (a largest body must fit)")
        if self.max_body_bytes < self.max_value_bytes:
            raise ConfigError("max_body_bytes must be at least max_value_bytes (a transaction carries values)")
        if self.peer_urls and not (self.replication_user and self.replication_password):
            # A primary that cannot ask its peers for a newer timeline cannot be fenced.
            raise ConfigError(
                "peers are set but KVSTORE_REPLICATION_USER / KVSTORE_REPLICATION_PASSWORD are not: "
                "set both (the replication user) so this node can check its peers, or remove peers"
            )
        return self


NODE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SYNC_REPLICAS = re.compile(r"^\s*(?:ANY\s+)?(\d+)\s*\(([^)]*)\)\s*$", re.IGNORECASE)


def parse_synchronous_replicas(text: str) -> tuple[int, tuple[str, ...]]:
    if not text.strip():
        return 0, ()
    match = _SYNC_REPLICAS.match(text)
    if match is None:
        raise ConfigError(f"synchronous_replicas: {text!r} is not like 'ANY 1 (r1, r2)'")
    names = tuple(name.strip() for name in match.group(2).split(",") if name.strip())
    count = int(match.group(1))
    if not names or not 1 <= count <= len(names):
        raise ConfigError(f"synchronous_replicas: {text!r} needs 1 <= n <= the number of names")
    return count, names


def _convert(name: str, kind: Any, raw: Any) -> Any:
    text_kind = str(kind)
    try:
        if kind is FsyncPolicy or "FsyncPolicy" in text_kind:
            return FsyncPolicy(str(raw).lower())
        if "Path" in text_kind:
            return Path(raw)
        if "int" in text_kind and "str" not in text_kind:
            return int(raw)
        if "float" in text_kind:
            return float(raw)
        return str(raw)
    except ValueError:
        choices = ", ".join(p.value for p in FsyncPolicy) if "FsyncPolicy" in text_kind else None
        hint = f" (one of: {choices})" if choices else ""
        raise ConfigError(f"{name}: {raw!r} is not a valid value{hint}") from None


def load_settings(
    flags: Mapping[str, Any], environ: Mapping[str, str] | None = None, config_path: Path | None = None
) -> Settings:
    """Merge the four sources; `flags` holds only options given on the command line."""
    environ = os.environ if environ is None else environ
    known = {f.name: f.type for f in fields(Settings)}
    values: dict[str, Any] = {}
    data_dir = Path(flags.get("data_dir") or environ.get(f"{ENV_PREFIX}DATA_DIR") or Settings.data_dir)
    path = config_path or data_dir / "config.toml"
    if path.exists():
        try:
            document = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for name, raw in document.items():
            if name not in known or name in _SECRET_FIELDS:
                raise ConfigError(f"{path}: unknown setting {name!r}")
            values[name] = _convert(name, known[name], raw)
    for name, kind in known.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _convert(name, kind, raw)
    for name, raw in flags.items():
        if raw is not None:
            values[name] = _convert(name, known[name], raw)
    values["data_dir"] = data_dir
    return dataclasses.replace(Settings(), **values).validate()
