"""Starting and stopping kvstored: ports, configuration errors, clean shutdown with open streams."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from support.harness import NodeProcess


def test_a_second_node_on_a_busy_port_refuses_to_start(node_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = node_factory("first").start()
    second = NodeProcess(tmp_path / "second")
    second.port, second.url = first.port, first.url
    try:
        assert second.spawn().wait(30) == 1
        assert f"cannot listen on 127.0.0.1:{first.port}" in second.log()
    finally:
        second.close()
    with first.client() as client:  # the first node still owns every connection
        for i in range(20):
            assert client.put(f"/v1/kv/k{i}", content=b"x").status_code == 201


def test_bad_configuration_exits_2_with_the_setting_named(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env={"KVSTORE_FSYNC": "sometimes"})
    assert node.spawn().wait(30) == 2
    assert "fsync" in node.log() and "always" in node.log()
    node = node_factory("bad-toml")
    node.data_dir.mkdir(parents=True)
    (node.data_dir / "config.toml").write_text("max_value_bytes = 0\n")
    assert node.spawn().wait(30) == 2
    assert "max_value_bytes" in node.log()


def test_sigterm_with_a_following_wal_stream_exits_0_promptly(node) -> None:  # type: ignore[no-untyped-def]
    lines: list[bytes] = []
    with node.client() as client:
        start = client.get("/v1/admin/wal").json()["commit_lsn"]

    def follow() -> None:
        with node.client() as client:
            try:
                params = {"follow": "true", "from_lsn": start}
                with client.stream("GET", "/v1/admin/wal/records", params=params) as stream:
                    for line in stream.iter_lines():
                        lines.append(line.encode())
            except httpx.TransportError:
                pass

    follower = threading.Thread(target=follow)
    follower.start()
    with node.client() as client:
        for i in range(3):
            client.put(f"/v1/kv/f{i}", content=b"v")
    deadline = time.monotonic() + 10
    while len([line for line in lines if b'"SET"' in line]) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len([line for line in lines if b'"SET"' in line]) == 3
    started = time.monotonic()
    assert node.stop(timeout_s=20) == 0
    assert time.monotonic() - started < 10
    follower.join(10)
    assert not follower.is_alive()
    assert '"shut down"' in node.log()
