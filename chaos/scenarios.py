"""The scenarios: which faults a run injects, when, and what the node must do about them
beyond what every run checks (durability, convergence, linearizability).

A body runs while the workload does; `run.load(f)` lets the load go on for a fraction f of
the run's duration, so one `--duration` scales every scenario.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kvstore.client import ClientError
from kvstore.node.wal.format import format_lsn, parse_lsn

from .backend import NODE_NAMES, PRIMARY, ClusterSpec, Corruption, NodeStartFailed
from .runner import Run, Scenario

REPLICA = "r1"
# Small segments and frequent checkpoints: WAL recycling and snapshots happen in short runs.
CHURN = {"KVSTORE_WAL_SEGMENT_SIZE_BYTES": "262144", "KVSTORE_CHECKPOINT_WAL_BYTES": "1048576"}
FENCE_TIMEOUT_S = 15.0
PAUSE_MIN_S = 3.0  # longer than the workload's request timeout: some outcomes become unknown
PRELOAD_KEYS = 20_000  # enough that a checkpoint takes a while to write
PRELOAD_BATCH = 1000
CHECKPOINT_KILL_ATTEMPTS = 5
MIXED_GAP_S = 3.0  # load between two faults of the mixed scenario (at most)
MIXED_DOWN_S = 2.0  # how long a node stays down or cut off there (at most)
# Every node's synchronous setting in the mixed scenario: whichever is primary waits for one
# of the others, so failover never needs the one node that might be down.
ANY_OTHER_SYNCHRONOUS = {
    "KVSTORE_SYNCHRONOUS_COMMIT": "remote_apply",
    "KVSTORE_SYNCHRONOUS_REPLICAS": "ANY 1 (p, r1, r2)",
    "KVSTORE_SYNCHRONOUS_COMMIT_TIMEOUT_S": "10",
}


def kill_primary(run: Run) -> None:
    run.load(0.4)
    run.kill(PRIMARY)
    run.load(0.1)
    run.restart(PRIMARY)
    run.load(0.5)


def kill_replica(run: Run) -> None:
    run.load(0.3)
    run.kill(REPLICA)
    run.load(0.3)
    run.restart(REPLICA)
    run.load(0.4)


def promote_replica(run: Run) -> None:
    """Fail over to the synchronous replica, then bring the old primary back as a replica."""
    run.load(0.4)
    run.kill(PRIMARY)
    run.promote(REPLICA)
    run.load(0.2)
    run.restart(PRIMARY)
    state = _wait_for_state(run, PRIMARY, "fenced", FENCE_TIMEOUT_S)
    run.expect("fenced", state == "fenced", f"the old primary came back {state}, refusing writes")
    with run.fault("rejoin", PRIMARY, primary=REPLICA) as fault:
        plan = run.backend.rejoin(PRIMARY, REPLICA)
        fault.detail["action"] = plan.get("action")
    run.load(0.4)


def partition_replica(run: Run) -> None:
    run.load(0.3)
    with run.fault("partition", REPLICA, other=PRIMARY):
        run.backend.isolate(REPLICA)
        run.load(0.1)  # what was in flight when the link was cut lands
        before = run.client(REPLICA).digest()["apply_lsn"]
        run.load(0.3)
        after = run.client(REPLICA).digest()["apply_lsn"]
        run.backend.heal(REPLICA)
    run.expect(
        "partition held",
        before == after,
        f"{REPLICA} applied {before} then {after} while cut off from {PRIMARY}",
        apply_lsn=[before, after],
    )
    run.load(0.3)


def torn_tail(run: Run) -> None:
    run.load(0.4)
    run.kill(PRIMARY)
    damage = run.corrupt_wal(PRIMARY, Corruption.TORN_TAIL)
    logged = len(run.backend.log(PRIMARY))
    run.restart(PRIMARY)
    cut = "torn WAL tail cut" in run.backend.log(PRIMARY)[logged:]
    where = format_lsn(damage.lsn)
    run.expect("torn tail cut", cut, f"recovery {'cut' if cut else 'did not report'} the torn tail at {where}")
    run.load(0.6)


def flipped_byte(run: Run) -> None:
    run.load(0.4)
    run.kill(PRIMARY)
    damage = run.corrupt_wal(PRIMARY, Corruption.FLIPPED_BYTE)
    where = format_lsn(damage.lsn)
    try:
        run.restart(PRIMARY)
    except NodeStartFailed as refused:
        named = where in refused.log
        run.expect(
            "corruption refused",
            refused.exit_code == 4 and named,
            f"exit code {refused.exit_code}; the log {'names' if named else 'does not name'} LSN {where}",
            exit_code=refused.exit_code,
            lsn=where,
        )
    else:
        run.expect("corruption refused", False, f"the node started on a WAL damaged at {where}")
        run.kill(PRIMARY)
    with run.fault("repair-wal", PRIMARY):  # the operator restores the file, then starts the node
        run.backend.repair_wal(PRIMARY, damage)
    run.restart(PRIMARY)
    run.load(0.5)


def kill_during_checkpoint(run: Run) -> None:
    """SIGKILL while a checkpoint of a store large enough to take a while is being written."""
    run.load(0.2)
    client = run.client(PRIMARY)
    versions: dict[str, int] = {}
    for start in range(0, PRELOAD_KEYS, PRELOAD_BATCH):
        ops = [{"op": "set", "key": f"pre:{n:06d}", "value": str(n)} for n in range(start, start + PRELOAD_BATCH)]
        version = client.txn(ops)["version"]
        versions.update((op["key"], version) for op in ops)
    seconds = client.checkpoint()["seconds"]
    interrupted = 0
    for attempt in range(1, CHECKPOINT_KILL_ATTEMPTS + 1):
        run.load(0.05)  # new writes: the next checkpoint is not a no-op
        answered = threading.Event()
        checkpoint = threading.Thread(target=_checkpoint_quietly, args=(run, answered), daemon=True)
        checkpoint.start()
        time.sleep(seconds / 2)
        with run.fault("kill", PRIMARY, during="checkpoint", attempt=attempt):
            run.backend.kill(PRIMARY)
        checkpoint.join()
        run.restart(PRIMARY)
        if not answered.is_set():
            interrupted = attempt
            break
    run.expect(
        "killed mid-checkpoint",
        interrupted > 0,
        f"attempt {interrupted} of {CHECKPOINT_KILL_ATTEMPTS} killed the node mid-checkpoint"
        if interrupted
        else "every checkpoint finished before the kill",
        checkpoint_s=seconds,
    )
    found = {item["key"]: item["version"] for item in run.client(PRIMARY).scan("pre:")}
    run.expect(
        "preloaded keys intact",
        found == versions,
        f"{len(found)} of {len(versions)} preloaded keys, {sum(found.get(k) == v for k, v in versions.items())} at their version",
    )
    run.load(0.4)


def pause_primary(run: Run) -> None:
    run.load(0.3)
    with run.fault("pause", PRIMARY):
        run.backend.pause(PRIMARY)
        time.sleep(max(PAUSE_MIN_S, 0.2 * run.duration_s))
        run.backend.resume(PRIMARY)
    run.load(0.5)


def mixed_faults(run: Run) -> None:
    """Rounds of every kind of fault, each round in a seeded random order, with load between
    them, until the duration is spent (at least one round). Failover promotes the most
    advanced replica, as an operator would: every node makes ANY 1 of the others synchronous,
    so whichever replica has received the most holds every acknowledged write."""
    faults: list[Callable[[Run], None]] = [
        _kill_and_restart_primary,
        _kill_and_restart_replica,
        _pause_primary,
        _isolate_replica,
        _fail_over,
    ]
    deadline = time.monotonic() + run.duration_s
    rounds = 0
    while rounds == 0 or time.monotonic() < deadline:
        for fault in run.random.sample(faults, len(faults)):
            time.sleep(_mixed_pause(run, MIXED_GAP_S))
            fault(run)
        rounds += 1
    time.sleep(_mixed_pause(run, MIXED_GAP_S))
    states = [fault.detail["came_back"] for fault in run.history.faults if fault.kind == "rejoin"]
    run.expect(
        "old primaries fenced",
        all(state == "fenced" for state in states),
        f"{states.count('fenced')} of {len(states)} old primaries came back fenced, refusing writes",
        rounds=rounds,
        came_back=states,
    )


def _kill_and_restart_primary(run: Run) -> None:
    run.kill(run.primary)
    time.sleep(_mixed_pause(run, MIXED_DOWN_S))
    run.restart(run.primary)


def _kill_and_restart_replica(run: Run) -> None:
    replica = run.random.choice(run.replicas())
    run.kill(replica)
    time.sleep(_mixed_pause(run, MIXED_DOWN_S))
    run.restart(replica)


def _pause_primary(run: Run) -> None:
    with run.fault("pause", run.primary):
        run.backend.pause(run.primary)
        time.sleep(PAUSE_MIN_S)
        run.backend.resume(run.primary)


def _isolate_replica(run: Run) -> None:
    replica = run.random.choice(run.replicas())
    with run.fault("partition", replica):
        run.backend.isolate(replica)
        time.sleep(_mixed_pause(run, MIXED_DOWN_S))
        run.backend.heal(replica)


def _fail_over(run: Run) -> None:
    old = run.primary
    run.kill(old)
    run.promote(max(run.replicas(), key=lambda node: _flush_lsn(run, node)))
    time.sleep(_mixed_pause(run, MIXED_DOWN_S))
    run.restart(old)
    came_back = _wait_for_state(run, old, "fenced", FENCE_TIMEOUT_S)
    with run.fault("rejoin", old, primary=run.primary, came_back=came_back) as fault:
        fault.detail["action"] = run.backend.rejoin(old, run.primary).get("action")


def _mixed_pause(run: Run, longest_s: float) -> float:
    """A tenth of the duration, at most `longest_s`: a short test run still does every fault."""
    return min(longest_s, 0.1 * run.duration_s)


def _flush_lsn(run: Run, node: str) -> int:
    return parse_lsn(run.client(node).status()["lsn"]["flush_lsn"])


def _checkpoint_quietly(run: Run, answered: threading.Event) -> None:
    try:
        run.client(PRIMARY).checkpoint()
        answered.set()
    except ClientError:
        pass  # killed under it: the point of the exercise


def _wait_for_state(run: Run, node: str, wanted: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    state = "unreachable"
    while time.monotonic() < deadline:
        try:
            state = run.client(node).status()["state"]
        except ClientError:
            state = "unreachable"
        if state == wanted:
            break
        time.sleep(0.1)
    return state


# Three nodes where the other replica matters (it must keep up, or follow a new primary);
# two elsewhere, which leaves the two cores to the node under fault.
THREE = NODE_NAMES
TWO = (PRIMARY, REPLICA)

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "kill-primary",
            "SIGKILL the primary under load, restart it (fsync=always)",
            kill_primary,
            ClusterSpec(THREE, settings=CHURN),
        ),
        Scenario(
            "kill-replica",
            "SIGKILL a replica under load, restart it",
            kill_replica,
            ClusterSpec(THREE, settings=CHURN),
        ),
        Scenario(
            "promote",
            "SIGKILL the primary, promote the synchronous replica, rejoin the old primary",
            promote_replica,
            ClusterSpec(THREE, synchronous_replica=REPLICA, settings=CHURN),
        ),
        Scenario(
            "partition",
            "cut a replica off from the primary, then heal",
            partition_replica,
            ClusterSpec(TWO, settings=CHURN),
        ),
        Scenario(
            "torn-tail",
            "SIGKILL the primary, end its WAL mid-record, restart",
            torn_tail,
            ClusterSpec(TWO, settings=CHURN),
        ),
        Scenario(
            "flipped-byte",
            "flip a byte inside the primary's WAL: it must refuse to start (exit 4) naming the LSN",
            flipped_byte,
            ClusterSpec(TWO),  # no churn: a fresh checkpoint could leave too few records to damage
        ),
        Scenario(
            "kill-checkpoint",
            "SIGKILL the primary in the middle of a checkpoint",
            kill_during_checkpoint,
            ClusterSpec(TWO),
        ),
        Scenario(
            "pause-primary",
            "SIGSTOP the primary past the clients' timeout, then SIGCONT",
            pause_primary,
            ClusterSpec(TWO, settings=CHURN),
        ),
        Scenario(
            "mixed",
            "rounds of kill/restart primary and replica, pause, partition and failover+rejoin, for --duration",
            mixed_faults,
            ClusterSpec(THREE, settings={**CHURN, **ANY_OTHER_SYNCHRONOUS}),
        ),
    )
}
