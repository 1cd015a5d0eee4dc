"""`kvctl status` over several nodes, `kvctl promote` and `kvctl rejoin`: the judging of a
cluster's rows on its own, then the real commands against a primary and its replica (and a
URL where nothing listens) through a failover and the old primary's rejoin."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.cli.client import KvctlError, NodeUnreachable
from kvstore.cli.commands.cluster import NodeReport, cluster_problems, wait_for_replica
from support.harness import MakeNode, NodeProcess, free_port
from support.kvctl_runner import as_env, fails, kvctl, kvctl_json, kvctl_login, ok
from support.replication import REPLICATION_CREDENTIALS
from support.waiting import wait_until

WAIT_S = 30.0


# -- pure parts -----------------------------------------------------------------------------


def node(url: str, role: str, state: str, **fields: Any) -> NodeReport:
    document = {"role": role, "state": state, "timeline": 1, "system_identifier": "7", **fields}
    return NodeReport(url, document)


def test_two_unfenced_primaries_are_a_split_brain_and_a_fenced_one_is_not() -> None:
    p, r1 = node("http://p", "primary", "running"), node("http://r1", "primary", "running", timeline=2)
    dead = NodeReport("http://r2", None, "unreachable: connection refused")

    assert cluster_problems([p, r1, dead]) == [
        "split brain: 2 unfenced primaries take writes: http://p (timeline 1), http://r1 (timeline 2)"
    ]
    rejoin = "http://p is a fenced former primary; make it a replica: kvctl rejoin --url http://p --primary http://r1"
    fenced = node("http://p", "primary", "fenced")
    assert cluster_problems([fenced, r1, dead]) == [rejoin]
    # Between learning of the newer timeline and persisting the fence, the state says read-only.
    fencing = node("http://p", "primary", "read-only", read_only_reason="fenced: peer http://r1 is on timeline 2")
    assert cluster_problems([fencing, r1]) == [rejoin]


def test_cluster_problems_name_foreign_systems_a_missing_primary_and_lost_slots() -> None:
    replica = node("http://r1", "replica", "streaming")
    foreign = node("http://x", "primary", "running", system_identifier="8")
    lost = {"name": "r2", "state": "lost"}
    primary = node("http://p", "primary", "running", replicas=[{"name": "r1", "state": "streaming"}, lost])

    assert cluster_problems([replica, foreign]) == [
        "the nodes belong to different systems (initdb'd apart): http://r1 (7), http://x (8)"
    ]
    assert cluster_problems([replica]) == ["none of the nodes that answered is a primary taking writes"]
    assert cluster_problems([primary, replica]) == [
        "http://p: slot r2 is lost; its replica will take a new base backup"
    ]
    assert cluster_problems([NodeReport("http://p", None, "error: invalid token")]) == ["no node answered"]


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


def test_waiting_for_a_rejoin_wants_a_replica_that_restarted_after_the_request() -> None:
    clock = FakeClock()
    answers: Iterator[Any] = iter(
        [
            {"role": "replica", "state": "streaming", "uptime_s": 50.0},  # not restarted yet
            NodeUnreachable("cannot reach http://p: connection refused", "connection refused"),
            {"role": "replica", "state": "connecting", "uptime_s": 0.1},
        ]
    )

    def fetch() -> dict[str, Any]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    back = wait_for_replica("http://p", fetch, clock(), 5.0, clock, clock.sleep)

    assert back["state"] == "connecting"


def test_waiting_for_a_rejoin_gives_up_saying_what_it_last_saw() -> None:
    clock = FakeClock()

    def still_fenced() -> dict[str, Any]:
        return {"role": "primary", "state": "fenced", "uptime_s": 80.0}

    with pytest.raises(KvctlError) as raised:
        wait_for_replica("http://p", still_fenced, clock(), 1.0, clock, clock.sleep)

    assert raised.value.message == (
        "http://p did not come back as a replica within 1 s; last seen: primary (fenced), up 80 s"
    )


def test_rejoin_bad_usage_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    assert kvctl("rejoin", "--url", "http://127.0.0.1:1", config=config).returncode == 2  # no --primary
    wait_negative = kvctl("rejoin", "--primary", "http://127.0.0.1:1", "--wait", "-1", config=config)
    assert wait_negative.returncode == 2


# -- real nodes -------------------------------------------------------------------------------


def table(output: str) -> dict[str, dict[str, str]]:
    """The cluster table as {NODE: {column: cell}}, cut at the headers' offsets (cells may hold spaces)."""
    lines = [line for line in output.splitlines() if not line.startswith("warning: ")]
    columns = [(match.group(), match.start()) for match in re.finditer(r"\S+", lines[0])]
    ends = [start for _, start in columns[1:]] + [None]
    rows = [{name: line[start:end].strip() for (name, start), end in zip(columns, ends)} for line in lines[1:]]
    return {row["NODE"]: row for row in rows}


def last_contact_s_ago(replica: NodeProcess) -> float | None:
    with replica.client() as client:
        return client.get("/v1/status").json()["replication"]["last_contact_s_ago"]  # type: ignore[no-any-return]


def pick(row: dict[str, str], *columns: str) -> tuple[str, ...]:
    return tuple(row[column] for column in columns)


def fields(output: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in output.splitlines() if line.strip())


def found_problems(result: subprocess.CompletedProcess[str]) -> str:
    """The full output of a `kvctl status` that found problems: exit status 1, nothing on stderr."""
    assert (result.returncode, result.stderr) == (1, ""), f"{result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout


def warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning: ")]


def test_status_exits_1_after_printing_the_problems_it_finds(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    cluster = ["--url", dead[0], "--url", dead[1], "--token", "t"]

    output = found_problems(kvctl("status", *cluster, config=config))
    assert [row["STATE"] for row in table(output).values()] == ["unreachable: connection refused"] * 2
    assert warnings(output) == ["warning: no node answered"]
    document = json.loads(found_problems(kvctl("status", *cluster, "--format", "json", config=config)))
    assert [node["url"] for node in document["nodes"]] == dead and document["problems"] == ["no node answered"]


def test_status_promote_and_rejoin_through_a_failover(node_factory: MakeNode, tmp_path: Path) -> None:
    config = tmp_path / "kvctl" / "config.json"
    primary = node_factory("p", env=REPLICATION_CREDENTIALS, args=["--name", "p"]).start()
    replica = node_factory(
        "r1", env=REPLICATION_CREDENTIALS, args=["--name", "r1", "--replica-of", primary.url]
    ).start()
    dead = f"http://127.0.0.1:{free_port()}"
    ok(kvctl_login(primary, config))  # the login file's token goes to every listed node
    ok(kvctl("set", "before", "1", "--url", primary.url, config=config))
    wait_until(lambda: last_contact_s_ago(replica) is not None, WAIT_S, "the replica's first contact")
    cluster = ["--url", primary.url, "--url", replica.url, "--url", dead]

    rows = table(ok(kvctl("status", *cluster, config=config)))
    columns = ("NAME", "ROLE", "STATE", "TIMELINE", "LAG_BYTES")
    assert pick(rows[primary.url], *columns) == ("p", "primary", "running", "1", "-")
    assert pick(rows[replica.url], "NAME", "ROLE", "TIMELINE") == ("r1", "replica", "1")
    assert rows[replica.url]["LAST_CONTACT"].endswith(" s ago") and rows[replica.url]["LAG_BYTES"].isdigit()
    assert rows[dead]["STATE"] == "unreachable: connection refused"
    document = kvctl_json("status", *cluster, config=config)
    assert [(n["url"], n["status"] and n["status"]["role"], n["error"]) for n in document["nodes"]] == [
        (primary.url, "primary", None),
        (replica.url, "replica", None),
        (dead, None, "unreachable: connection refused"),
    ]
    assert document["problems"] == []

    # Failover: the primary dies (no primary takes writes), the replica is promoted.
    assert fails(kvctl("promote", "--url", primary.url, config=config)) == "kvctl: this node is already a primary"
    primary.kill()
    headless = found_problems(kvctl("status", *cluster, config=config))
    assert table(headless)[replica.url]["ROLE"] == "replica"
    assert warnings(headless) == ["warning: none of the nodes that answered is a primary taking writes"]
    env = as_env(replica)
    promoted = kvctl_json("promote", config=config, env=env)
    assert (promoted["timeline"], promoted["parent_timeline"], promoted["unreceived_bytes"]) == (2, 1, 0)
    assert promoted["switch_lsn"] and promoted["seconds"] >= 0

    # The old primary comes back fenced (its peer is on timeline 2): not a split brain.
    primary.extra_args += ["--peers", replica.url]
    primary.start()
    output = found_problems(kvctl("status", *cluster, config=config))
    after = table(output)
    assert [pick(after[url], "ROLE", "TIMELINE") for url in (primary.url, replica.url)] == [
        ("primary", "1"),
        ("primary", "2"),
    ]
    rejoin = f"kvctl rejoin --url {primary.url} --primary {replica.url}"
    assert warnings(output) == [f"warning: {primary.url} is a fenced former primary; make it a replica: {rejoin}"]
    # Asked alone, the fenced node is a problem too, shown in full.
    alone = fields(found_problems(kvctl("status", "--url", primary.url, config=config)))
    assert alone["role"] == "primary" and alone["state"].startswith("fenced (fenced: peer ")
    alone_json = json.loads(found_problems(kvctl("status", "--url", primary.url, "--format=json", config=config)))
    assert (alone_json["state"], alone_json["timeline"]) == ("fenced", 1)

    # A rejoin to where nothing listens says so, and changes nothing.
    unreachable = fails(kvctl("rejoin", "--url", primary.url, "--primary", dead, config=config))
    reason = unreachable.removeprefix(f"kvctl: cannot reach the new primary at {dead}: ")
    assert reason != unreachable and reason.strip(), unreachable

    # Rejoin: the plan, then the old primary back as a replica, following the new timeline.
    rejoined = ok(kvctl("rejoin", "--url", primary.url, "--primary", replica.url, "--wait", str(WAIT_S), config=config))
    plan, last = fields(rejoined), rejoined.splitlines()[-1]
    assert plan["action"] in ("follow", "rewind", "rebootstrap") and plan["primary"] == replica.url
    assert last.startswith(f"{primary.url} is back as a replica of {replica.url} (state ")
    final = kvctl_json("status", "--url", replica.url, "--url", primary.url, config=config)
    assert [n["status"]["role"] for n in final["nodes"]] == ["primary", "replica"] and final["problems"] == []
    ok(kvctl("set", "after", "2", config=config, env=env))
    with primary.client() as client:  # the token from before the failover still works
        wait_until(lambda: client.get("/v1/kv/after").text == "2", WAIT_S, "the rejoined node to apply a new write")
