"""Fencing never switches off silently: a primary with peers needs the credentials to check
them, and a peer that answers but cannot be checked holds writes until a check succeeds.
A peer that does not answer proves nothing; a fence or a failed WAL is never lifted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from kvstore.node.config import Settings
from kvstore.node.engine import Engine
from kvstore.node.errors import ReadOnly, Unavailable
from kvstore.node.store import Store
from kvstore.replication.failover import PeerWatch
from support.fake_peer import HTML_PAGE, Answer, FakePeer, json_answer
from support.harness import CHEAP_HASHING, MakeNode, NodeProcess, free_port
from support.replication import admin_get, assert_converged, make
from support.waiting import wait_until

SYSTEM = 7310000000000000001
NOT_CHECKED = "answers but cannot be checked for a newer timeline"


def put_status(node: NodeProcess, key: str = "k") -> int:
    with node.client() as client:
        return client.put(f"/v1/kv/{key}", content=b"1").status_code


def refused_write(node: NodeProcess) -> str:
    with node.client() as client:
        refused = client.put("/v1/kv/k", content=b"1")
    assert refused.status_code == 503, refused.text
    message = str(refused.json()["error"]["message"])
    status = admin_get(node, "/v1/status")
    assert (status["state"], status["read_only_reason"]) == ("read-only", message)
    return message


# -- real nodes -------------------------------------------------------------------------------


def test_an_old_primary_restarted_with_peers_but_no_replication_credentials_refuses_to_start(
    node_factory: MakeNode,
) -> None:
    primary = node_factory("p").start()  # never had replication credentials
    assert put_status(primary) == 201
    assert primary.stop() == 0
    primary.extra_args += ["--peers", f"http://127.0.0.1:{free_port()}"]

    assert primary.spawn().wait(60) == 2

    named = [line for line in primary.log().splitlines() if "KVSTORE_REPLICATION_USER" in line]
    assert named == [
        "kvstored: configuration error: peers are set but KVSTORE_REPLICATION_USER / "
        "KVSTORE_REPLICATION_PASSWORD are not: set both (the replication user) so this node can check "
        "its peers, or remove peers"
    ]


def test_a_peer_refusing_the_replication_login_holds_writes_until_a_check_succeeds(node_factory: MakeNode) -> None:
    # Throttling off on the peer: the primary's failed logins must not lock the user out there.
    peer = make(node_factory, "q", **CHEAP_HASHING, KVSTORE_LOGIN_MAX_FAILURES="1000").start()
    primary = make(node_factory, "p", KVSTORE_REPLICATION_PASSWORD="not-the-password-q-has")
    primary.extra_args += ["--peers", peer.url]
    primary.start()

    message = refused_write(primary)

    assert message.startswith(
        f"peer {peer.url} {NOT_CHECKED}: login to {peer.url} as 'replicator' failed: 401 unauthorized: "
    )
    assert message.endswith("until every peer that answers can be checked (or is taken out of peers)")
    with peer.client() as client:  # the operator fixes the replication user's password on the peer
        changed = client.put("/v1/admin/users/replicator/password", json={"password": "not-the-password-q-has"})
        assert changed.status_code == 204, changed.text
    wait_until(lambda: put_status(primary) == 201, what="writes accepted after a successful check")
    assert admin_get(primary, "/v1/status")["read_only_reason"] is None
    assert "writes are no longer held" in primary.log()


@pytest.mark.parametrize("answer", [json_answer({}), HTML_PAGE], ids=["empty-json", "html"])
def test_a_peer_that_is_not_a_kvstored_node_holds_writes_until_it_stops_answering(
    node_factory: MakeNode, answer: Answer
) -> None:
    fake = FakePeer(answer)
    try:
        primary = make(node_factory, "p")
        primary.extra_args += ["--peers", fake.url]
        primary.start()

        message = refused_write(primary)

        assert message.startswith(
            f"peer {fake.url} {NOT_CHECKED}: {fake.url} answered the login with something that is not a "
            "kvstored node: 200 "
        )
        # Held, not fenced: it is still the primary of its timeline, and its replicas follow it.
        replica = make(node_factory, "r1", replica_of=primary.url).start()
        wait_until(lambda: admin_get(replica, "/v1/status")["replication"]["state"] == "streaming", what="a stream")
    finally:
        fake.close()
    # Gone: a node that does not answer takes no writes, and proves nothing either way.
    wait_until(lambda: put_status(primary) == 201, what="writes accepted once the peer is gone")
    assert_converged(primary, replica)
    assert "KeyError" not in primary.log()


# -- the watch on its own, against scripted peers -----------------------------------------------


class WatchedNode:
    """What PeerWatch uses of a node: its settings, its engine, and its role (failover.WatchedRole),
    a primary on timeline 1 of SYSTEM."""

    def __init__(self, peer_url: str) -> None:
        self.settings = Settings(
            peers=peer_url, replication_user="replicator", replication_password="replicator-password"
        )
        self.engine = Engine(Store())
        self.is_replica = False
        self.fenced_reason: str | None = None
        self.timeline = 1

    def fence(self, reason: str) -> None:
        self.fenced_reason = f"fenced: {reason}"
        self.engine.refuse_writes(self.fenced_reason, ReadOnly)


def identity(timeline: int = 1, **fields: Any) -> Answer:
    document = {
        "system_identifier": str(SYSTEM),
        "timeline": timeline,
        "role": "primary",
        "write_lsn": 100,
        "history": [{"parent": t, "switch_lsn": 50 + t} for t in range(1, timeline)],
        "fenced": None,
    }
    return json_answer(document | fields)


REFUSED_LOGIN = json_answer({"error": {"code": "unauthorized", "message": "wrong user name or password"}}, 401)


@pytest.fixture
def peer() -> Iterator[FakePeer]:
    fake = FakePeer(json_answer({"error": {"code": "not_found", "message": "no such route"}}, 404))
    fake.answers["/v1/auth/login"] = json_answer({"token": "a-token"})
    fake.answers["/v1/replication/identify"] = identity()
    yield fake
    fake.close()


def watching(node: WatchedNode) -> PeerWatch:
    return PeerWatch(node.settings, node.engine, SYSTEM, node)


def check(node: WatchedNode, watch: PeerWatch) -> str | None:
    asyncio.run(watch.check())
    return node.engine.read_only_reason


def test_the_watch_holds_writes_only_while_an_answering_peer_cannot_be_checked(peer: FakePeer) -> None:
    node = WatchedNode(peer.url)
    watch = watching(node)
    assert check(node, watch) is None

    # The replication user's password changed on the peer: the token and a new login are refused.
    peer.answers["/v1/auth/login"] = peer.answers["/v1/replication/identify"] = REFUSED_LOGIN
    held = check(node, watch)
    assert held is not None and held.startswith(
        f"peer {peer.url} {NOT_CHECKED}: login to {peer.url} as 'replicator' failed: "
        "401 unauthorized: wrong user name or password; check KVSTORE_REPLICATION_USER"
    )
    with pytest.raises(Unavailable):  # 503, not 421: no other node is known to take the writes
        asyncio.run(node.engine.put("k", b"v"))

    peer.answers["/v1/auth/login"] = json_answer({"token": "a-token"})  # fixed, but the peer is no node
    peer.answers["/v1/replication/identify"] = json_answer({"timeline": 3})
    assert check(node, watch) == (
        f"peer {peer.url} {NOT_CHECKED}: {peer.url} answered the identify request with something that is not "
        "a kvstored node: no 'system_identifier' in {'timeline': 3}; writes are refused until every peer that "
        "answers can be checked (or is taken out of peers)"
    )

    peer.answers["/v1/replication/identify"] = json_answer({"error": {"code": "unavailable", "message": "x"}}, 503)
    assert check(node, watch) is None  # starting or stopping: proves nothing
    peer.answers["/v1/replication/identify"] = REFUSED_LOGIN
    assert check(node, watch) is not None
    peer.close()
    assert check(node, watch) is None  # gone: proves nothing


def test_the_watch_fences_on_a_newer_timeline_and_never_lifts_a_fence_or_a_failed_wal(peer: FakePeer) -> None:
    fenced = WatchedNode(peer.url)
    watch = watching(fenced)
    peer.answers["/v1/replication/identify"] = identity(timeline=2)
    assert check(fenced, watch) == f"fenced: peer {peer.url} is on timeline 2"

    other_system = identity(timeline=5, system_identifier="42")
    held = WatchedNode(peer.url)
    watch = watching(held)
    peer.answers["/v1/replication/identify"] = REFUSED_LOGIN
    assert check(held, watch) is not None
    held.fence("a replica streams on timeline 2")
    peer.answers["/v1/replication/identify"] = other_system  # answers, checked: another system's timelines
    assert check(held, watch) == "fenced: a replica streams on timeline 2"

    failed = WatchedNode(peer.url)
    watch = watching(failed)
    peer.answers["/v1/replication/identify"] = REFUSED_LOGIN
    assert check(failed, watch) is not None
    failed.engine.on_wal_failed(OSError("No space left on device"))
    peer.answers["/v1/replication/identify"] = identity()
    reason = check(failed, watch)
    assert reason is not None and reason.startswith("WAL write failed")


def test_the_watch_logs_in_once_and_replaces_a_token_the_peer_no_longer_takes_once(peer: FakePeer) -> None:
    node = WatchedNode(peer.url)
    watch = watching(node)
    login, identify = ("POST", "/v1/auth/login"), ("GET", "/v1/replication/identify")
    assert check(node, watch) is None and check(node, watch) is None
    assert (peer.requests.count(login), peer.requests.count(identify)) == (1, 2)  # a login costs the peer argon2

    peer.answers["/v1/replication/identify"] = REFUSED_LOGIN  # the token is refused, then the new one too
    held = check(node, watch)

    assert held is not None and f"{peer.url} did not identify itself: 401 unauthorized" in held
    assert (peer.requests.count(login), peer.requests.count(identify)) == (2, 4)
