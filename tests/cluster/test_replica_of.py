"""Where a replica streams from: `--replica-of` on the command line wins over the primary in
control (and updates it); the environment and config.toml only name a primary when control
names none. Something that answers where a node should be is named as such, never a KeyError."""

from __future__ import annotations

import pytest

from kvstore.node.control import read_control
from support.fake_peer import HTML_PAGE, Answer, FakePeer, json_answer
from support.harness import MakeNode, NodeProcess
from support.replication import admin_get, assert_converged, make
from support.waiting import wait_until

ANSWERS = [json_answer({}), HTML_PAGE]
ANSWER_IDS = ["empty-json", "html"]


def not_a_node(url: str, answer: Answer) -> str:
    body = " ".join(answer[2].decode().split())
    return f"{url} answered the login with something that is not a kvstored node: {answer[0]} {body}"


def replication(node: NodeProcess) -> dict[str, object]:
    return dict(admin_get(node, "/v1/status")["replication"])


def restart_with(node: NodeProcess, args: list[str], env: dict[str, str] | None = None) -> None:
    assert node.stop() == 0
    node.extra_args = ["--name", "r1", *args]
    node.extra_env = {name: value for name, value in node.extra_env.items() if name != "KVSTORE_REPLICA_OF"}
    node.extra_env |= env or {}
    node.restart()


@pytest.mark.parametrize("answer", ANSWERS, ids=ANSWER_IDS)
def test_replica_of_on_the_command_line_wins_over_control_and_the_environment_does_not(
    node_factory: MakeNode, answer: Answer
) -> None:
    primary = make(node_factory, "p").start()
    replica = make(node_factory, "r1", replica_of=primary.url).start()
    with primary.client() as client:
        assert client.put("/v1/kv/before", content=b"1").status_code == 201
    assert_converged(primary, replica)
    fake = FakePeer(answer)
    try:
        restart_with(replica, ["--replica-of", fake.url])

        expected = f"ReplicationError: {not_a_node(fake.url, answer)}"
        wait_until(lambda: replication(replica)["last_error"] == expected, what="the receiver to name the problem")
        assert replication(replica)["primary"] == fake.url
        assert read_control(replica.data_dir / "control").primary_url == fake.url
        assert "following the primary named by --replica-of" in replica.log()

        # The environment is a default for a replica whose control names no primary, nothing more.
        restart_with(replica, [], {"KVSTORE_REPLICA_OF": primary.url})
        assert replication(replica)["primary"] == fake.url
    finally:
        fake.close()
    restart_with(replica, ["--replica-of", primary.url])
    wait_until(lambda: replication(replica)["state"] == "streaming", what="streaming from the primary again")
    with primary.client() as client:
        assert client.put("/v1/kv/after", content=b"2").status_code == 201
    assert_converged(primary, replica)
    assert "KeyError" not in replica.log()


@pytest.mark.parametrize("answer", ANSWERS, ids=ANSWER_IDS)
def test_a_new_replica_of_something_that_is_not_a_node_says_so_while_it_retries(
    node_factory: MakeNode, answer: Answer
) -> None:
    fake = FakePeer(answer)
    try:
        replica = make(node_factory, "r1", replica_of=fake.url)
        replica.spawn()
        wait_until(lambda: replica.log().count("base backup failed; retrying") >= 2, what="two attempts")
    finally:
        fake.close()
    failures = [line for line in replica.log().splitlines() if "base backup failed; retrying" in line]
    assert all(not_a_node(fake.url, answer) in line for line in failures), failures
    assert "KeyError" not in replica.log()
