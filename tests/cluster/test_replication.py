"""WAL-shipping replication with real processes: base backup under load, SIGKILLed replicas,
lost slots, damage on the wire, and a failover with promotion, fencing and rejoin."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kvstore.chaos.proxy import LinkProxy
from support.harness import NodeProcess
from support.replication import VALUE, admin_get, assert_converged, make
from support.waiting import wait_until


class Writer(threading.Thread):
    """Writes `w:<n>` keys as fast as it can; remembers what was acknowledged, and what is in doubt."""

    def __init__(self, url: str, token: str, prefix: str = "w") -> None:
        super().__init__(daemon=True)
        self._client = httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=10)
        self._prefix = prefix
        self._halt = threading.Event()
        self.acked: dict[str, str] = {}
        self.unknown: set[str] = set()

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            key, value = f"{self._prefix}:{n}", f"{n}-{VALUE}"
            try:
                response = self._client.put(f"/v1/kv/{key}", content=value)
            except httpx.HTTPError:
                self.unknown.add(key)  # the node may have died after or before committing
                time.sleep(0.05)
            else:
                if response.status_code in (200, 201):
                    self.acked[key] = value
                elif response.status_code >= 500:
                    self.unknown.add(key)
            n += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(15)
        self._client.close()


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.stop()


def start_writer(writers: list[Writer], node: NodeProcess, prefix: str = "w") -> Writer:
    writer = Writer(node.url, node.token(), prefix)
    writers.append(writer)
    writer.start()
    return writer


def assert_wal_identical(primary: NodeProcess, replica: NodeProcess) -> int:
    """Every segment the replica holds that the primary still has is byte for byte the
    primary's; the live one is a prefix of the primary's (a checkpoint record may have just
    been appended there). Closed segments alone may all be recycled on one side by now."""
    theirs = sorted((replica.data_dir / "WAL").glob("*.wal"))
    compared = 0
    for segment in theirs:
        ours = primary.data_dir / "WAL" / segment.name
        if ours.exists():
            replica_bytes, primary_bytes = segment.read_bytes(), ours.read_bytes()
            if segment == theirs[-1]:
                primary_bytes = primary_bytes[: len(replica_bytes)]
            assert replica_bytes == primary_bytes, segment.name
            compared += bool(replica_bytes)
    return compared


def base_backups(node: NodeProcess) -> int:
    return node.log().count('"msg":"base backup taken"')


def test_an_empty_replica_catches_up_from_a_base_backup_under_load(node_factory, writers) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p").start()
    writer = start_writer(writers, primary)
    wait_until(lambda: len(writer.acked) > 300, what="some writes")
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    wait_until(lambda: len(writer.acked) > 3000, 60, "writes during catch-up")
    writer.stop()
    assert_converged(primary, replica)
    assert base_backups(replica) == 1
    with replica.client() as client:  # and it serves reads of what was acknowledged
        for key in list(writer.acked)[::500]:
            assert client.get(f"/v1/kv/{key}").text == writer.acked[key]
        refused = client.put("/v1/kv/x", content=b"1")
        assert refused.status_code == 421 and primary.url in refused.json()["error"]["message"]
    assert assert_wal_identical(primary, replica) >= 1

    # Stays equal under more load; status on both sides says so.
    writer = start_writer(writers, primary, "again")
    wait_until(lambda: len(writer.acked) > 500, what="more writes")
    writer.stop()
    assert_converged(primary, replica)
    slots = admin_get(primary, "/v1/status")["replicas"]
    assert [(s["name"], s["state"], s["lag_bytes"]) for s in slots] == [("r1", "streaming", 0)]
    status = admin_get(replica, "/v1/status")
    assert status["role"] == "replica" and status["replication"]["lag_bytes"] == 0
    metrics = httpx.get(f"{primary.url}/metrics", timeout=10).text
    assert 'kvstore_replication_lag_bytes{replica="r1"} 0.0' in metrics
    from_memory = re.search(r'kvstore_replication_sent_bytes_total\{source="memory"\} (\S+)', metrics)
    assert from_memory is not None and float(from_memory.group(1)) > 0  # the caught-up stream reads the live tail


def test_read_your_writes_on_a_replica_with_min_lsn(node_factory) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url, KVSTORE_MIN_LSN_WAIT_S="1").start()
    with primary.client() as writer_client, replica.client() as reader:
        for n in range(20):
            lsn = writer_client.put(f"/v1/kv/ryw:{n}", content=str(n)).headers["x-kv-commit-lsn"]
            response = reader.get(f"/v1/kv/ryw:{n}", headers={"x-kv-min-lsn": lsn})
            assert response.status_code == 200 and response.text == str(n)
        too_far = reader.get("/v1/kv/ryw:0", headers={"x-kv-min-lsn": "FF/0"})
        assert too_far.status_code == 504 and "min_lsn_wait_s" in too_far.json()["error"]["message"]


def test_a_killed_replica_resumes_from_its_own_wal_and_a_lost_slot_rebootstraps(node_factory, writers) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p", KVSTORE_MAX_SLOT_WAL_KEEP_BYTES="300000").start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    writer = start_writer(writers, primary)
    wait_until(lambda: len(writer.acked) > 500, what="writes")
    replica.kill()
    wait_until(lambda: len(writer.acked) > 1500, what="writes while the replica is down")
    replica.restart()
    writer.stop()
    assert_converged(primary, replica)
    assert base_backups(replica) == 1  # resumed from its own WAL: the slot held what it needed

    replica.kill()
    writer = start_writer(writers, primary, "more")
    wait_until(lambda: len(writer.acked) > 4000, 60, "more WAL than the slot may hold")
    writer.stop()
    with primary.client() as client:
        assert client.post("/v1/admin/checkpoint").status_code == 200
    assert admin_get(primary, "/v1/status")["replicas"][0]["state"] == "lost"
    slots = httpx.get(f"{primary.url}/metrics", timeout=10).text  # what KVStoreReplicationSlotLost reads
    assert 'kvstore_replication_slots{state="lost"} 1.0' in slots, slots
    assert 'kvstore_replication_slots{state="streaming"} 0.0' in slots, slots
    replica.restart()
    wait_until(lambda: base_backups(replica) == 2, 60, "a new base backup")
    assert_converged(primary, replica)


def test_a_damaged_frame_on_the_wire_is_never_applied(node_factory, writers) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p").start()
    damaged = threading.Event()

    def flip_once(request_head: bytes, offset: int, data: bytes) -> bytes:
        target = 30_000  # well inside the stream body, past the HTTP headers
        if b"/v1/replication/stream" in request_head and not damaged.is_set() and offset <= target < offset + len(data):
            damaged.set()
            index = target - offset
            return data[:index] + bytes([data[index] ^ 0x20]) + data[index + 1 :]
        return data

    proxy = LinkProxy(primary.port, damage=flip_once)
    try:
        replica = make(node_factory, "r1", replica_of=proxy.url).start()
        writer = start_writer(writers, primary)
        wait_until(damaged.is_set, 60, "the proxy to damage the stream")
        wait_until(lambda: len(writer.acked) > 2000, what="writes after the damage")
        writer.stop()
        assert_converged(primary, replica)
        assert "replication stream failed" in replica.log()
        assert replica.stop() == 0
        verify = subprocess.run(
            [sys.executable, "-m", "kvstore.cli.kvctl", "wal", "verify", "--data-dir", str(replica.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        proxy.close()


def replication_logins(node: NodeProcess) -> int:
    """Successful logins of the replication user on this node, from its audit log."""
    lines = (node.data_dir / "log" / "audit.jsonl").read_text().splitlines()
    return sum('"login_ok"' in line and '"replicator"' in line for line in lines)


def test_a_replica_reconnects_without_logging_in_again(node_factory) -> None:  # type: ignore[no-untyped-def]
    """Each login costs the primary an argon2 hash: a replica keeps its token across reconnects."""
    primary = make(node_factory, "p").start()
    proxy = LinkProxy(primary.port)
    try:
        replica = make(node_factory, "r1", replica_of=proxy.url).start()

        def replication() -> dict[str, Any]:
            return dict(admin_get(replica, "/v1/status")["replication"])

        wait_until(lambda: replication()["state"] == "streaming", what="the replica to stream")
        logins = replication_logins(primary)
        assert logins >= 1
        for cut in range(1, 4):
            reconnects = replication()["reconnects"]
            proxy.cut()
            wait_until(
                lambda before=reconnects: replication()["reconnects"] > before, what=f"reconnect after cut {cut}"
            )
            proxy.mend()
            wait_until(lambda: replication()["state"] == "streaming", what=f"streaming again after cut {cut}")
        assert replication_logins(primary) == logins
    finally:
        proxy.close()


def test_failover_promote_fence_and_rejoin_lose_no_acknowledged_write(node_factory, writers) -> None:  # type: ignore[no-untyped-def]
    ports = {name: make(node_factory, name).port for name in ("p", "r1", "r2")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    def peers(name: str) -> list[str]:
        return ["--peers", ",".join(url for other, url in urls.items() if other != name)]

    sync = {"KVSTORE_SYNCHRONOUS_COMMIT": "remote_apply", "KVSTORE_SYNCHRONOUS_REPLICAS": "ANY 1 (r1)"}
    primary = make(node_factory, "p2", **sync)
    primary.port, primary.url = ports["p"], urls["p"]
    primary.extra_args += peers("p")
    primary.start()
    r1 = make(node_factory, "r1b", replica_of=urls["p"])
    r1.port, r1.url = ports["r1"], urls["r1"]
    r1.extra_args = ["--name", "r1", "--replica-of", urls["p"], *peers("r1")]
    r1.start()
    r2 = make(node_factory, "r2b", replica_of=urls["p"])
    r2.port, r2.url = ports["r2"], urls["r2"]
    r2.extra_args = ["--name", "r2", "--replica-of", urls["p"], *peers("r2")]
    r2.start()

    writer = start_writer(writers, primary)
    wait_until(lambda: len(writer.acked) > 1000, 60, "synchronous writes")
    primary.kill()
    writer.stop()
    promoted = httpx.post(f"{r1.url}/v1/admin/promote", headers={"authorization": f"Bearer {r1.token()}"}, timeout=30)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["timeline"] == 2

    # Every acknowledged write is on the new primary, with its value.
    with r1.client() as client:
        for key, value in writer.acked.items():
            response = client.get(f"/v1/kv/{key}")
            assert response.status_code == 200 and response.text == value, key
        assert client.put("/v1/kv/after-failover", content=b"1").status_code == 201

    # The other replica follows the new timeline.
    assert_converged(r1, r2, timeout_s=60)
    assert admin_get(r2, "/v1/status")["timeline"] == 2

    # The old primary comes back fenced: it learns of timeline 2 from its peers before any write.
    primary.start()
    with primary.client() as client:
        refused = client.put("/v1/kv/split-brain", content=b"1")
        assert refused.status_code == 421 and "fenced" in refused.json()["error"]["message"]
    assert admin_get(primary, "/v1/status")["state"] == "fenced"
    fenced = httpx.get(f"{primary.url}/metrics", timeout=10).text  # what KVStorePrimaryFenced reads
    assert re.search(r"^kvstore_node_fenced 1\.0$", fenced, re.MULTILINE), fenced
    assert re.search(r"^kvstore_node_fenced 0\.0$", httpx.get(f"{r1.url}/metrics", timeout=10).text, re.MULTILINE)

    # kvctl-equivalent rejoin: it becomes a replica of r1 and converges; its divergent WAL is kept.
    with primary.client() as client:
        plan = client.post("/v1/admin/rejoin", json={"primary": r1.url})
        assert plan.status_code == 202, plan.text
    wait_until(lambda: admin_get(primary, "/v1/status")["role"] == "replica", 60, "the rejoin restart")
    assert_converged(r1, r2, primary, timeout_s=60)
    if plan.json()["action"] != "follow":
        assert any(Path(plan.json()["kept_in"]).iterdir())


def test_synchronous_commit_waits_for_the_named_replica(node_factory) -> None:  # type: ignore[no-untyped-def]
    sync = {
        "KVSTORE_SYNCHRONOUS_COMMIT": "remote_apply",
        "KVSTORE_SYNCHRONOUS_REPLICAS": "ANY 1 (r1)",
        "KVSTORE_SYNCHRONOUS_COMMIT_TIMEOUT_S": "2",
    }
    primary = make(node_factory, "p", **sync).start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    with primary.client() as writer, replica.client() as reader:
        for n in range(20):  # remote_apply: acknowledged means readable on the replica, at once
            assert writer.put(f"/v1/kv/sync:{n}", content=str(n)).status_code == 201
            assert reader.get(f"/v1/kv/sync:{n}").text == str(n)
        replica.kill()
        started = time.monotonic()
        unconfirmed = writer.put("/v1/kv/sync:alone", content=b"1")
        assert unconfirmed.status_code == 504 and 1.5 < time.monotonic() - started < 10
        assert "may or may not survive a failover" in unconfirmed.json()["error"]["message"]
        # Durable here, but no read sees it before the replica has it: a failover could lose it.
        assert writer.get("/v1/kv/sync:alone").status_code == 404
        assert writer.get("/v1/kv/sync:19").text == "19"
    replica.restart()
    with primary.client() as writer:
        assert writer.put("/v1/kv/sync:back", content=b"1").status_code == 201
        assert writer.get("/v1/kv/sync:alone").text == "1"  # the replica confirmed it: now it commits
    assert_converged(primary, replica)


def test_a_restarted_synchronous_primary_serves_no_read_before_its_replica_confirms(node_factory) -> None:  # type: ignore[no-untyped-def]
    sync = {"KVSTORE_SYNCHRONOUS_COMMIT": "remote_apply", "KVSTORE_SYNCHRONOUS_REPLICAS": "ANY 1 (r1)"}
    primary = make(node_factory, "p", **sync).start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    with primary.client() as writer:
        assert writer.put("/v1/kv/restart:a", content=b"1").status_code == 201
    replica.kill()
    # Durable on p, never confirmed: p is killed before r1 is back.
    with primary.client() as writer, pytest.raises(httpx.ReadTimeout):
        writer.put("/v1/kv/restart:b", content=b"2", timeout=1.0)
    primary.kill()
    primary.restart()
    with primary.client() as reader:
        # p recovered restart:b from its WAL; r1 may never get it (a failover to r1 loses it), so
        # p shows nothing until r1 confirms what p recovered.
        held = reader.get("/v1/kv/restart:a")
        assert held.status_code == 503 and "synchronous replicas confirm" in held.json()["error"]["message"]
        assert held.headers["retry-after"] == "1"
        assert reader.get("/v1/kv", params={"prefix": "restart:"}).status_code == 503
    replica.restart()
    with primary.client() as reader:
        wait_until(lambda: reader.get("/v1/kv/restart:b").status_code == 200, timeout_s=30)
        assert reader.get("/v1/kv/restart:a").text == "1"
    assert_converged(primary, replica)
