"""The engine and WAL writer in-process: commit order, visibility, overlay hygiene, sync under load."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from kvstore.node import engine as engine_module
from kvstore.node import records
from kvstore.node.engine import Engine
from kvstore.node.errors import PreconditionFailed, Unavailable
from kvstore.node.store import VALUE
from kvstore.node.wal.policy import FsyncPolicy
from kvstore.node.wal.reader import WalScan
from kvstore.node.writes import TxnOp
from support.engine import engine_on_disk


def run_with_engine(tmp_path: Path, policy: FsyncPolicy, body: Callable[[Engine], Awaitable[None]]) -> None:
    async def main() -> None:
        async with engine_on_disk(tmp_path, policy) as engine:
            await body(engine)

    asyncio.run(main())


@pytest.mark.parametrize("policy", list(FsyncPolicy))
def test_a_write_is_invisible_to_readers_until_committed(tmp_path: Path, policy: FsyncPolicy) -> None:
    async def body(engine: Engine) -> None:
        put = asyncio.ensure_future(engine.put("k", b"v"))
        await asyncio.sleep(0)  # the write is logged; with fsync=always its flush is still running
        if policy is FsyncPolicy.ALWAYS:
            assert engine.get("k") is None  # no dirty read
        result = await put
        entry = engine.get("k")
        assert entry is not None and entry[VALUE] == b"v"
        assert engine.committed_lsn >= result.commit_lsn

    run_with_engine(tmp_path, policy, body)


def test_concurrent_incr_loses_nothing_and_the_wal_holds_every_step(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        results = await asyncio.gather(*(engine.incr("n", 1) for _ in range(200)))
        assert sorted(value for value, _ in results) == list(range(1, 201))
        entry = engine.get("n")
        assert entry is not None and entry[VALUE] == b"200"

    run_with_engine(tmp_path, FsyncPolicy.ALWAYS, body)
    values = [item.record[2] for item in WalScan(tmp_path, records.decode)]
    assert values == [str(i).encode() for i in range(1, 201)]


def test_deleting_an_absent_key_in_a_transaction_leaves_no_overlay_entry(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        results, _ = await engine.txn([TxnOp("del", f"ghost{i}") for i in range(50)] + [TxnOp("set", "real", b"1")])
        assert [r["deleted"] for r in results[:50]] == [False] * 50
        assert engine._overlay == {}  # every change committed, nothing left behind

    run_with_engine(tmp_path, FsyncPolicy.ALWAYS, body)


def test_a_failed_transaction_applies_nothing(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        await engine.put("a", b"old")
        with pytest.raises(PreconditionFailed, match="op 1"):
            await engine.txn([TxnOp("set", "a", b"new"), TxnOp("check", "a", if_version=999)])
        entry = engine.get("a")
        assert entry is not None and entry[VALUE] == b"old"
        assert engine._overlay == {}

    run_with_engine(tmp_path, FsyncPolicy.ALWAYS, body)


def test_sync_returns_under_steady_write_load(tmp_path: Path) -> None:
    """A checkpoint's sync must not wait for the writer to go idle: under load it never does."""

    async def body(engine: Engine) -> None:
        assert engine.writer is not None
        stop = asyncio.Event()

        async def writer_loop(n: int) -> None:
            i = 0
            while not stop.is_set():
                await engine.put(f"w{n}:{i % 10}", b"x")
                i += 1

        tasks = [asyncio.create_task(writer_loop(n)) for n in range(8)]
        await asyncio.sleep(0.2)
        target = engine.writer.end_lsn
        synced = await asyncio.wait_for(engine.writer.sync(), 5)
        assert synced >= target and engine.writer.flush_lsn >= target
        stop.set()
        await asyncio.gather(*tasks)

    run_with_engine(tmp_path, FsyncPolicy.ALWAYS, body)


def test_a_waiter_that_gave_up_never_holds_back_later_commits(tmp_path: Path) -> None:
    """A read waiting for an LSN far beyond the WAL times out; writes after it must still be answered."""

    async def body(engine: Engine) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.wait_for_commit(2**64 - 1), 0.05)
        result = await asyncio.wait_for(engine.put("k", b"v"), 5)
        assert engine.committed_lsn >= result.commit_lsn

    run_with_engine(tmp_path, FsyncPolicy.ALWAYS, body)


def test_waiters_are_released_by_their_own_lsn_whatever_the_order_they_came_in(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        far = asyncio.ensure_future(engine.wait_for_commit(engine.committed_lsn + 10**9))
        await asyncio.sleep(0)
        first = await engine.put("a", b"1")
        near = asyncio.ensure_future(engine.wait_for_commit(first.commit_lsn + 1))  # the next write's LSN
        await asyncio.wait_for(engine.put("b", b"2"), 5)
        await asyncio.wait_for(near, 5)
        assert not far.done()
        far.cancel()

    run_with_engine(tmp_path, FsyncPolicy.ALWAYS, body)


def test_abandoned_waiters_do_not_pile_up(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        for _ in range(10):
            waiters = [asyncio.ensure_future(engine.wait_for_commit(2**63 + n)) for n in range(100)]
            await asyncio.sleep(0)
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        assert engine.commit_waiters <= 200  # 1,000 abandoned over time; the dead ones are dropped
        live = asyncio.ensure_future(engine.wait_for_commit(engine.committed_lsn + 1))
        await asyncio.wait_for(engine.put("k", b"v"), 5)
        await asyncio.wait_for(live, 5)

    run_with_engine(tmp_path, FsyncPolicy.ALWAYS, body)


def test_under_synchronous_commit_a_write_commits_only_once_the_replicas_confirm_it(tmp_path: Path) -> None:
    async def body(engine: Engine) -> None:
        confirmed = 0
        engine.replicas_confirmed = lambda: confirmed
        put = asyncio.ensure_future(engine.put("k", b"v"))
        assert engine.writer is not None
        await engine.writer.sync()
        await asyncio.sleep(0.05)
        # Durable here, and not yet committed: not readable, not acknowledged.
        assert engine.write_lsn > engine.committed_lsn and engine.get("k") is None and not put.done()
        confirmed = engine.write_lsn
        engine.on_replicas_confirmed()
        result = await asyncio.wait_for(put, 5)
        entry = engine.get("k")
        assert entry is not None and entry[VALUE] == b"v" and engine.committed_lsn >= result.commit_lsn

    run_with_engine(tmp_path, FsyncPolicy.ALWAYS, body)


def test_writes_are_refused_not_queued_beyond_the_uncommitted_wal_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "MAX_UNCOMMITTED_WAL_BYTES", 4096)

    async def body(engine: Engine) -> None:
        engine.replicas_confirmed = lambda: 0  # the replicas never confirm
        pending = [asyncio.ensure_future(engine.put(f"k{n}", b"x" * 1000)) for n in range(4)]
        await asyncio.sleep(0)
        with pytest.raises(Unavailable, match="wait for the synchronous replicas to commit"):
            await asyncio.wait_for(engine.put("one-more", b"x" * 1000), 2)
        assert engine.get("one-more") is None
        engine.fail_waiters(Unavailable("test over"))
        await asyncio.gather(*pending, return_exceptions=True)

    run_with_engine(tmp_path, FsyncPolicy.ALWAYS, body)
