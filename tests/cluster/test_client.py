"""kvstore.client against real nodes: finding the primary, failover, sessions, typed errors and
idempotent retries of INCR after a dropped answer."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from kvstore.chaos.proxy import LinkProxy
from kvstore.client import (
    AsyncClient,
    Check,
    Client,
    Compacted,
    Conflict,
    Forbidden,
    PreconditionFailed,
    ReadOnlyReplica,
    Retry,
    Set,
    Unauthorized,
    Unavailable,
)
from kvstore.client.protocol import parse_lsn
from support.harness import ADMIN_PASSWORD, NodeProcess, free_port
from support.replication import admin_get, make
from support.waiting import wait_until

# Long enough to ride out a promotion; short steps so a test does not idle.
PATIENT = Retry(attempts=60, first_s=0.05, max_s=0.5)


def _admin(urls: list[str], **kwargs: object) -> Client:
    return Client(urls, username="admin", password=ADMIN_PASSWORD, **kwargs)  # type: ignore[arg-type]


def _applied(node: NodeProcess) -> int:
    return parse_lsn(admin_get(node, "/v1/status")["lsn"]["apply_lsn"])


def _promote(node: NodeProcess) -> None:
    promoted = httpx.post(
        f"{node.url}/v1/admin/promote", headers={"authorization": f"Bearer {node.token()}"}, timeout=60
    )
    assert promoted.status_code == 200, promoted.text


def test_writes_through_a_replica_find_the_primary_and_a_session_reads_its_writes(node_factory) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    # Only the replica is named: its 421 and its status lead to the primary.
    with _admin([replica.url], read_from="replica") as kv:
        first = kv.put("app:one", "1")
        assert kv.primary == primary.url
        assert first.created and first.version > 0
        with kv.session() as session:
            for n in range(20):
                written = kv.put(f"app:ryw:{n}", str(n))
                assert session.min_lsn == written.commit_lsn
                item = kv.get(f"app:ryw:{n}")  # served by the replica, after it applied the write
                assert item is not None and item.value == str(n).encode() and item.version == written.version
            assert kv.incr("app:counter") == 1
            assert kv.get("app:counter").value == b"1"  # type: ignore[union-attr]
        assert [info.key for info in kv.keys("app:ryw:")] == sorted(f"app:ryw:{n}" for n in range(20))


def test_the_errors_are_typed_and_carry_the_nodes_code(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()
    with _admin([node.url]) as kv:
        assert kv.get("app:missing") is None
        assert kv.delete("app:missing") is False
        written = kv.put("app:k", b"v")
        with pytest.raises(PreconditionFailed) as stale:
            kv.put("app:k", b"w", if_version=written.version + 100)
        assert stale.value.code == "precondition_failed" and stale.value.status == 412
        with pytest.raises(PreconditionFailed):
            kv.put("app:k", b"w", if_absent=True)
        assert kv.put("app:k", b"w", if_version=written.version).version > written.version
        with pytest.raises(Conflict) as not_a_number:
            kv.incr("app:k")
        assert not_a_number.value.code == "not_an_integer"
        with pytest.raises(PreconditionFailed):
            kv.txn([Check("app:k", if_absent=True), Set("app:other", "x")])
        assert kv.get("app:other") is None  # all or nothing
        assert kv.delete("app:k") is True
        with node.client() as admin:
            assert (
                admin.post("/v1/admin/users", json={"name": "nobody", "password": "nobody-password"}).status_code == 201
            )
    with Client([node.url], username="nobody", password="nobody-password") as nobody:
        with pytest.raises(Forbidden) as forbidden:
            nobody.put("app:k", b"v")
        assert forbidden.value.code == "forbidden" and "nobody" in forbidden.value.message
    with pytest.raises(Unauthorized), Client([node.url], username="nobody", password="wrong-password") as wrong:
        wrong.get("app:k")
    with pytest.raises(Unauthorized), Client([node.url], token="not-a-token") as forged:
        forged.get("app:k")
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable), Client([nowhere], token="t", retry=Retry(attempts=2, max_s=0.01)) as gone:
        gone.get("app:k")


def test_the_client_keeps_writing_across_a_promotion(node_factory) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    with _admin([primary.url, replica.url], retry=PATIENT) as kv:
        before = kv.put("app:before", "1")
        wait_until(lambda: _applied(replica) >= parse_lsn(before.commit_lsn), 30, "the replica to apply")
        primary.kill()
        threading.Timer(0.5, _promote, (replica,)).start()
        after = kv.put("app:after", "2")  # waits out the promotion, then finds the new primary
        assert kv.primary == replica.url
        assert after.commit_lsn and kv.get("app:before").value == b"1"  # type: ignore[union-attr]


def test_a_replica_list_with_no_primary_is_a_read_only_error(node_factory) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    primary.kill()  # the replica still names it, but nothing answers there
    with (
        _admin([replica.url], retry=Retry(attempts=3, max_s=0.05)) as kv,
        pytest.raises((ReadOnlyReplica, Unavailable)),
    ):
        kv.put("app:k", "v")


def _drop_first_answer(proxy_holder: list[LinkProxy], marker: bytes, then: object = None) -> object:
    """A damage hook for LinkProxy: the first answer to a request starting with `marker` is
    swallowed and the link cut (the write was done; its answer never arrives)."""
    dropped = threading.Event()

    def damage(head: bytes, offset: int, data: bytes) -> bytes:
        if dropped.is_set() or not head.startswith(marker):
            return data
        dropped.set()
        if callable(then):
            then(data)
        proxy_holder[0].cut()
        threading.Timer(0.3, proxy_holder[0].mend).start()
        return b""

    return damage


def test_an_incr_whose_answer_was_lost_is_retried_and_counted_once(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory().start()
    holder: list[LinkProxy] = []
    holder.append(LinkProxy(node.port, damage=_drop_first_answer(holder, b"POST /v1/kv/app%3Ahits/incr")))  # type: ignore[arg-type]
    try:
        with _admin([holder[0].url], retry=PATIENT) as kv:
            kv.put("app:warm", "1")  # logged in, connected
            assert kv.incr("app:hits") == 1  # the first answer was lost; the retry is recognised
            assert kv.incr("app:hits") == 2
        with node.client() as admin:
            assert admin.get("/v1/kv/app:hits").text == "2"
    finally:
        holder[0].close()


def test_an_incr_retried_after_a_failover_is_counted_once(node_factory) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    holder: list[LinkProxy] = []

    def fail_over(answer: bytes) -> None:
        """The INCR is done on the primary and replicated; then the primary dies, unanswered."""
        lsn = answer.split(b"x-kv-commit-lsn: ", 1)[1].split(b"\r\n", 1)[0].decode()
        wait_until(lambda: _applied(replica) >= parse_lsn(lsn), 30, "the replica to apply the INCR")
        primary.kill()
        threading.Timer(0.2, _promote, (replica,)).start()

    holder.append(LinkProxy(primary.port, damage=_drop_first_answer(holder, b"POST /v1/kv/app%3Ahits/incr", fail_over)))  # type: ignore[arg-type]
    try:
        with _admin([holder[0].url, replica.url], retry=PATIENT) as kv:
            kv.put("app:warm", "1")
            assert kv.incr("app:hits") == 1  # answered by the promoted replica, from the replicated record
            assert kv.primary == replica.url
            assert kv.incr("app:hits") == 2
    finally:
        holder[0].close()


def test_the_async_client_has_the_same_surface(node_factory) -> None:  # type: ignore[no-untyped-def]
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()

    async def run() -> None:
        async with AsyncClient([replica.url], username="admin", password=ADMIN_PASSWORD, read_from="replica") as kv:
            with kv.session():  # the replica answers the reads, each after the writes before it
                written = await kv.put("app:a", "1")
                item = await kv.get("app:a")
                assert item is not None and item.value == b"1" and item.version == written.version
                assert kv.primary == primary.url
                assert await kv.incr("app:n", 5) == 5
                results = await kv.txn([Set("app:b", "2"), Check("app:a", if_version=written.version)])
                assert results.results[0]["key"] == "app:b"
                assert [info.key async for info in kv.keys("app:")] == ["app:a", "app:b", "app:n"]
                with pytest.raises(PreconditionFailed):
                    await kv.put("app:a", "x", if_absent=True)
                assert await kv.delete("app:a") is True
                assert (await kv.status())["role"] == "replica"  # reads, status too, go to the replica
                # 50 requests at once over one client
                values = await asyncio.gather(*(kv.incr("app:many") for _ in range(50)))
                assert sorted(values) == list(range(1, 51))
                events = kv.watch("app:", from_lsn=written.commit_lsn)
                seen = [await anext(events) for _ in range(4)]
                await events.aclose()
                assert [(event.type, event.key) for event in seen] == [
                    ("set", "app:n"),
                    ("set", "app:b"),
                    ("del", "app:a"),
                    ("set", "app:many"),
                ]

    asyncio.run(run())


def test_watch_resumes_after_a_dropped_connection_and_reports_compaction(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = make(node_factory, "p").start()
    holder = [LinkProxy(node.port)]
    try:
        with _admin([holder[0].url], retry=PATIENT) as kv:
            start = kv.put("app:w:0", "0").commit_lsn
            events = kv.watch("app:w:", from_lsn=start)
            for n in range(1, 6):
                kv.put(f"app:w:{n}", str(n))
            seen = [next(events) for _ in range(5)]
            holder[0].cut()  # the watch's connection drops; it reconnects once the link is mended
            threading.Timer(0.5, holder[0].mend).start()
            kv.txn([Set("app:w:6", "6"), Set("app:w:7", "7")])
            seen += [next(events), next(events)]
            assert [event.key for event in seen] == [f"app:w:{n}" for n in range(1, 8)]
            assert seen[-1].lsn == seen[-2].lsn  # one transaction, one LSN
            assert [event.value for event in seen] == [str(n).encode() for n in range(1, 8)]
    finally:
        holder[0].close()
    with _admin([node.url]) as kv:
        for n in range(300):  # enough WAL to recycle the first segments at a checkpoint
            kv.put(f"app:fill:{n}", "v" * 1000)
        with node.client() as admin:
            assert admin.post("/v1/admin/checkpoint").status_code == 200
        with pytest.raises(Compacted) as compacted:
            next(kv.watch("app:", from_lsn="0/1"))
        assert compacted.value.status == 410 and compacted.value.oldest_lsn


def test_login_is_renewed_before_the_token_expires(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env={"KVSTORE_TOKEN_TTL_S": "61"}).start()
    with _admin([node.url]) as kv:
        kv.put("app:k", "1")
        first = kv._core._token  # noqa: SLF001 - the renewal is what is under test
        time.sleep(1.5)  # within RENEW_BEFORE_S (60 s) of a 61 s token's expiry: renewed on the next call
        kv.get("app:k")
        assert kv._core._token != first  # noqa: SLF001
