"""Point-in-time restore from a real S3 server (SeaweedFS) after losing the primary and its disk.

Writers overwrite and delete keys under load while the primary archives; at a time T the load
pauses and the state's digest is taken; more load follows, the primary is killed with SIGKILL and
its data directory destroyed. `kvctl restore --target-time T` must give a node holding exactly the
state at T, and a restore to the latest point every write acknowledged more than archive_timeout_s
before the kill."""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.harness import MakeNode, NodeProcess
from support.kvctl_runner import kvctl_json
from support.s3server import S3Server, seaweedfs

ARCHIVE_TIMEOUT_S = 1
KEYS = 300
WRITERS = 4


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


class Load:
    """WRITERS threads of PUTs (new keys and overwrites) and DELETEs over KEYS keys, pausable."""

    def __init__(self, node: NodeProcess) -> None:
        self._node = node
        self._token = node.token()
        self._run = threading.Event()
        self._stop = threading.Event()
        self._idle = [threading.Event() for _ in range(WRITERS)]
        self.acknowledged = 0
        self._threads = [threading.Thread(target=self._write, args=(i,), daemon=True) for i in range(WRITERS)]
        for thread in self._threads:
            thread.start()

    def _write(self, index: int) -> None:
        chooser = random.Random(index)
        headers = {"authorization": f"Bearer {self._token}"}
        with httpx.Client(base_url=self._node.url, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                if not self._run.is_set():
                    self._idle[index].set()
                    self._run.wait(0.05)
                    continue
                self._idle[index].clear()
                key = f"/v1/kv/load/{chooser.randrange(KEYS)}"
                if chooser.random() < 0.2:
                    answer = client.delete(key)
                    assert answer.status_code in (200, 204, 404), answer.text
                else:
                    answer = client.put(key, content=f"{index}-{chooser.random()}".encode())
                    assert answer.status_code in (200, 201), answer.text
                self.acknowledged += 1

    def run_for(self, seconds: float) -> None:
        self._run.set()
        time.sleep(seconds)
        self.pause()

    def pause(self) -> None:
        self._run.clear()
        for idle in self._idle:
            assert idle.wait(30), "a writer did not pause"

    def stop(self) -> None:
        self._stop.set()
        self._run.set()
        for thread in self._threads:
            thread.join(30)


def _digest(node: NodeProcess) -> dict[str, Any]:
    with node.client() as client:
        document: dict[str, Any] = client.get("/v1/admin/digest").json()
    return {"digest": document["digest"], "keys": document["keys"]}


def _iso_now_ms() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_restore_to_a_time_and_to_the_latest_point_after_losing_the_primary(
    node_factory: MakeNode, weed: S3Server, tmp_path: Path
) -> None:
    url = f"s3://{weed.bucket}/pitr"
    env = {
        **weed.env,
        "KVSTORE_ARCHIVE_URL": url,
        "KVSTORE_ARCHIVE_TIMEOUT_S": str(ARCHIVE_TIMEOUT_S),
        "KVSTORE_ARCHIVE_SNAPSHOT_INTERVAL_S": "2",  # several snapshots: restore must pick the right one
        "KVSTORE_WAL_SEGMENT_SIZE_BYTES": "65536",
        "KVSTORE_CHECKPOINT_INTERVAL_S": "1",
    }
    primary = node_factory("primary", env=env).start()
    load = Load(primary)
    try:
        load.run_for(3)
        at_t = _digest(primary)
        time.sleep(0.01)
        target_time = _iso_now_ms()  # after every write of the first phase, before any of the second
        time.sleep(0.01)
        load.run_for(3)  # overwrites and deletes of the same keys
        latest = _digest(primary)
    finally:
        load.stop()
    assert load.acknowledged > 100 and latest != at_t
    time.sleep(ARCHIVE_TIMEOUT_S + 3)  # every write is now older than archive_timeout_s, plus slack
    primary.kill()
    shutil.rmtree(primary.data_dir)

    kvctl_env = dict(weed.env)
    restored_at_t = tmp_path / "restored-at-t"
    result = kvctl_json(
        "restore", url, "--data-dir", str(restored_at_t), "--target-time", target_time,
        config=tmp_path / "kvctl.json", env=kvctl_env,
    )  # fmt: skip
    assert result["timeline"] == 2
    node_at_t = node_factory("restored-at-t")
    node_at_t.data_dir = restored_at_t
    node_at_t.start()
    assert _digest(node_at_t) == at_t
    node_at_t.stop()

    restored_latest = tmp_path / "restored-latest"
    kvctl_json("restore", url, "--data-dir", str(restored_latest), config=tmp_path / "kvctl.json", env=kvctl_env)
    node_latest = node_factory("restored-latest")
    node_latest.data_dir = restored_latest
    node_latest.start()
    assert _digest(node_latest) == latest
    with node_latest.client() as client:  # a primary on a new timeline, taking writes
        status = client.get("/v1/status").json()
        assert status["role"] == "primary" and status["timeline"] == 2  # the archive knew only timeline 1
        assert client.put("/v1/kv/after-restore", content=b"yes").status_code == 201
