"""The remembered answer of a write with an Idempotency-Key: its record, its commit LSN, its checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from kvstore.node import catalog_documents, idempotency, records
from kvstore.node.api.http import Request, Response
from kvstore.node.api.idempotent import IdempotentWrites
from kvstore.node.catalog import Principal
from kvstore.node.errors import BadRequest
from kvstore.node.idempotency import Answer, Remember
from kvstore.node.store import VALUE, Store
from kvstore.node.wal.format import format_lsn
from kvstore.node.wal.policy import FsyncPolicy
from kvstore.node.wal.reader import WalScan
from kvstore.node.writes import TxnOp, WriteResult
from support.engine import engine_on_disk

FOREVER_MS = 2**50  # an expiry far in the future
REQUEST = {"method": "PUT", "path": "/v1/kv/k", "fingerprint": "f" * 64}


def _put_answer(result: WriteResult) -> Answer:
    body = {"version": result.version, "commit_lsn": format_lsn(result.commit_lsn)}
    return Answer(201 if result.created else 200, body, [("etag", f'"{result.version}"')])


def test_the_answer_states_the_commit_lsn_of_its_own_record_across_segment_switches(tmp_path: Path) -> None:
    """Segments of 4 KiB and values of varying size: many records start a new segment, whose
    header moves their end; every answer must still name its record's end exactly."""

    async def main() -> list[tuple[str, WriteResult]]:
        done = []
        async with engine_on_disk(tmp_path, segment_size_bytes=4096) as engine:
            for index in range(120):
                key = idempotency.store_key("alice", f"request-{index}")
                remember = Remember(key, REQUEST, 0, FOREVER_MS, _put_answer)
                result = await engine.put(f"k{index}", b"v" * (index * 7 % 300), remember=remember)
                done.append((key, result))
                entry = engine.get(key)
                assert entry is not None
                document = catalog_documents.parse(key, entry[VALUE])
                replayed = idempotency.replayed(document)
                assert replayed.body == _put_answer(result).body
                assert ("x-kv-commit-lsn", format_lsn(result.commit_lsn)) in replayed.headers
        return done

    done = asyncio.run(main())
    scanned = {item.end_lsn: item.record for item in WalScan(tmp_path, records.decode)}
    assert len({path.name for path in tmp_path.iterdir()}) > 5  # the switches happened
    for index, (key, result) in enumerate(done):
        record = scanned[result.commit_lsn]  # the write and its answer: one record, ending there
        assert record[0] == records.TXN and [op[1] for op in record[1]] == [f"k{index}", key]


def test_a_transaction_and_its_answer_share_one_record_and_version(tmp_path: Path) -> None:
    async def main() -> None:
        async with engine_on_disk(tmp_path) as engine:

            def answer(outcome: tuple[list[dict[str, object]], WriteResult]) -> Answer:
                return Answer(200, {"results": outcome[0], "commit_lsn": format_lsn(outcome[1].commit_lsn)}, [])

            key = idempotency.store_key("bob", "t1")
            ops = [TxnOp("set", "a", b"1"), TxnOp("del", "absent")]
            _, result = await engine.txn(ops, Remember(key, REQUEST, 0, FOREVER_MS, answer))
            entry, data = engine.get(key), engine.get("a")
            assert entry is not None and data is not None and entry[1] == data[1] == result.version

    asyncio.run(main())


def test_a_retry_while_the_first_is_logged_but_not_committed_waits_and_gets_its_answer(tmp_path: Path) -> None:
    principal = Principal("carol", superuser=False, roles=(), grants=(), token_generation=1)
    request = Request("POST", "/v1/kv/n/incr", "", {idempotency.HEADER: "retry-1"})

    def answer(outcome: tuple[int, WriteResult]) -> Answer:
        return Answer(200, {"value": outcome[0], "commit_lsn": format_lsn(outcome[1].commit_lsn)}, [])

    async def main() -> None:
        async with engine_on_disk(tmp_path, FsyncPolicy.ALWAYS) as engine:
            writes = IdempotentWrites(lambda: engine, ttl_s=60)
            remember = await writes.prepare(request, principal, answer)
            assert isinstance(remember, Remember)
            first = asyncio.ensure_future(engine.incr("n", 1, remember))
            await asyncio.sleep(0)  # logged; with fsync=always its flush is still running
            assert engine.pending_lsn(remember.key) is not None
            replayed = await writes.prepare(request, principal, answer)  # waits for the first's commit
            value, result = await first
            assert isinstance(replayed, Response) and ("idempotent-replayed", "true") in replayed.headers
            assert orjson.loads(replayed.body) == {"value": 1, "commit_lsn": format_lsn(result.commit_lsn)}
            assert value == 1 and engine.get("n") is not None

    asyncio.run(main())


def test_remembered_answers_do_not_move_the_catalog_epoch() -> None:
    """The catalog's caches follow `watched_epoch`: a write with an Idempotency-Key must not
    invalidate them, nor be checked as a catalog document."""
    store, seen = Store(), []
    store.watch("_sys.", lambda key, entry: seen.append(key), unwatched=(idempotency.PREFIX,))
    answer_key = idempotency.store_key("alice", "k")
    store.apply(records.set_record(answer_key, b"{}", 1, 0, FOREVER_MS), 10)
    store.apply(records.del_record(answer_key, 2), 20)
    assert store.watched_epoch == 0 and seen == []
    store.apply(records.set_record("_sys.users:alice", b"{}", 3, 0, 0), 30)
    assert store.watched_epoch == 1 and seen == ["_sys.users:alice"]


def test_keys_are_1_to_128_visible_ascii_characters() -> None:
    assert idempotency.parse_key("8e0f-ab:c/d~!") == "8e0f-ab:c/d~!"
    assert idempotency.parse_key("x" * 128) == "x" * 128
    for bad in ("", "x" * 129, "caf\u00e9", "a\x00b", "a\nb", "a b"):
        with pytest.raises(BadRequest, match="1-128 visible ASCII"):
            idempotency.parse_key(bad)


def test_the_fingerprint_tells_every_part_apart() -> None:
    prints = {
        idempotency.fingerprint("PUT", "/v1/kv/a", "", b"b"),
        idempotency.fingerprint("PUT", "/v1/kv/ab", "", b""),  # the same bytes, split otherwise
        idempotency.fingerprint("PUT", "/v1/kv/a", "b", b""),
        idempotency.fingerprint("POST", "/v1/kv/a", "", b"b"),
    }
    assert len(prints) == 4
    assert idempotency.fingerprint("PUT", "/v1/kv/a", "", b"b") in prints  # and is stable


def test_a_damaged_answer_fails_its_document_check() -> None:
    key = idempotency.store_key("alice", "k")
    good = {**REQUEST, "status": 204, "body": None, "headers": [["etag", '"3"']], "commit_lsn": "0" * 16}
    catalog_documents.parse(key, orjson.dumps(good))
    for damage in ({"status": 412}, {"body": []}, {"headers": [["etag"]]}, {"commit_lsn": "12"}, {"extra": 1}):
        with pytest.raises(catalog_documents.DocumentError, match="an idempotency answer"):
            catalog_documents.parse(key, orjson.dumps({**good, **damage}))
