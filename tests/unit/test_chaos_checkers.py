"""The chaos checkers, fed hand-made histories: each kind of anomaly is reported, correct
histories pass. Pure and fast: no node runs here."""

from __future__ import annotations

import math
import random

import pytest

from kvstore.chaos.checkers import check_convergence, check_durability, check_linearizability, written_keys
from kvstore.chaos.history import Op, OpKind, Outcome
from kvstore.chaos.linearizability import RegisterOp, SearchBudgetExceeded, is_linearizable, shrink

OK, FAILED, UNKNOWN = Outcome.OK, Outcome.FAILED, Outcome.UNKNOWN
_ids = iter(range(1_000_000))


def write(key: str, value: str, start: float, end: float, outcome: Outcome = OK) -> Op:
    return Op(next(_ids), 0, OpKind.WRITE, key, value, start, end, outcome)


def read(key: str, value: str | None, start: float, end: float, outcome: Outcome = OK) -> Op:
    return Op(next(_ids), 1, OpKind.READ, key, value, start, end, outcome)


# -- durability -------------------------------------------------------------------------


def test_durability_passes_when_every_acknowledged_write_is_there() -> None:
    ops = [write("dur:1", "a", 0, 1), write("dur:2", "b", 0, 1), write("dur:3", "c", 0, 1, FAILED)]
    verdict = check_durability(ops, {"dur:1": "a", "dur:2": "b", "dur:3": None})
    assert verdict.passed and verdict.details["acknowledged_writes"] == 2
    assert written_keys(ops) == ["dur:1", "dur:2", "dur:3"]


def test_durability_reports_a_lost_acknowledged_write() -> None:
    ops = [write("dur:1", "a", 0, 1), write("dur:2", "b", 2, 3)]
    verdict = check_durability(ops, {"dur:1": "a", "dur:2": None})
    assert not verdict.passed
    assert verdict.details["lost_write_count"] == 1
    assert verdict.details["lost_writes"][0] | {"id": 0} == ops[1].to_json() | {"found": None, "id": 0}


def test_durability_reports_an_older_value_that_came_back() -> None:
    ops = [write("reg:x", "old", 0, 1), write("reg:x", "new", 2, 3)]
    verdict = check_durability(ops, {"reg:x": "old"})
    assert not verdict.passed and [w["value"] for w in verdict.details["lost_writes"]] == ["new"]


def test_unknown_writes_may_go_either_way_and_concurrent_acks_may_win() -> None:
    ops = [
        write("reg:x", "a", 0, 1),
        write("reg:x", "b", 2, 4),
        write("reg:x", "c", 3, 5),  # concurrent with b: either may be last
        write("reg:x", "d", 6, 7, UNKNOWN),
        write("dur:1", "e", 6, 7, UNKNOWN),
    ]
    for final in ("b", "c", "d"):
        assert check_durability(ops, {"reg:x": final, "dur:1": None}).passed, final
    assert check_durability(ops, {"reg:x": "c", "dur:1": "e"}).passed


def test_durability_reports_a_value_no_write_could_leave() -> None:
    ops = [write("dur:1", "a", 0, 1, FAILED), write("dur:2", "b", 0, 1)]
    verdict = check_durability(ops, {"dur:1": "a", "dur:2": "garbage"})
    assert not verdict.passed
    assert [v["key"] for v in verdict.details["unexpected_values"]] == ["dur:1", "dur:2"]


# -- convergence ------------------------------------------------------------------------


def digest(value: str, lsn: str = "0/100") -> dict[str, object]:
    return {"digest": value, "apply_lsn": lsn, "keys": 10}


def test_convergence_passes_when_all_digests_match() -> None:
    verdict = check_convergence("p", {"p": digest("aa"), "r1": digest("aa"), "r2": digest("aa")})
    assert verdict.passed and verdict.details["divergent"] == []


def test_convergence_reports_a_divergent_or_silent_replica() -> None:
    verdict = check_convergence("p", {"p": digest("aa"), "r1": digest("bb"), "r2": None})
    assert not verdict.passed and verdict.details["divergent"] == ["r1", "r2"]
    assert not check_convergence("p", {"p": digest("aa"), "r1": digest("aa", "0/200")}).passed
    assert not check_convergence("p", {"p": None, "r1": digest("aa")}).passed


# -- linearizability --------------------------------------------------------------------


def test_a_correct_concurrent_register_history_is_linearizable() -> None:
    ops = [
        read("reg:x", None, 0, 1),
        write("reg:x", "a", 1, 4),
        read("reg:x", "a", 2, 3),  # sees a before a's write returned: fine, they overlap
        write("reg:x", "b", 3.5, 6),
        read("reg:x", "a", 5, 5.5),  # b still in flight
        read("reg:x", "b", 7, 8),
        write("reg:x", "c", 9, 10, UNKNOWN),  # never seen: may never have happened
        read("reg:x", "b", 11, 12),
        write("reg:x", "d", 13, 14, FAILED),
        read("reg:x", "x", 15, 16, FAILED),
    ]
    verdict = check_linearizability(ops)
    assert verdict.passed, verdict
    assert verdict.details["keys"]["reg:x"]["ops"] == 7  # the unknown write nobody read is pruned


def test_a_stale_read_is_reported_with_a_minimal_witness() -> None:
    noise = [write("reg:x", f"n{i}", i, i + 0.5) for i in range(20)]
    stale = [
        write("reg:x", "a", 30, 31),
        write("reg:x", "b", 32, 33),
        read("reg:x", "a", 34, 35),  # b was acknowledged before this read began
    ]
    more = [write("reg:x", f"m{i}", 40 + i, 40.5 + i) for i in range(20)]
    verdict = check_linearizability(noise + stale + more + [read("reg:y", None, 0, 1)])
    assert not verdict.passed
    result = verdict.details["keys"]["reg:x"]
    assert result["linearizable"] is False
    assert [op["value"] for op in result["witness"]] == ["a", "b", "a"]
    assert verdict.details["keys"]["reg:y"]["linearizable"] is True


def test_reading_a_failed_write_or_an_unknown_write_that_was_undone_is_reported() -> None:
    phantom = [write("reg:x", "a", 0, 1, FAILED), read("reg:x", "a", 2, 3)]
    assert not check_linearizability(phantom).passed
    undone = [write("reg:x", "a", 0, 1, UNKNOWN), read("reg:x", "a", 2, 3), read("reg:x", None, 4, 5)]
    verdict = check_linearizability(undone)
    assert not verdict.passed and len(verdict.details["keys"]["reg:x"]["witness"]) == 3


def test_an_empty_history_is_not_a_pass() -> None:
    assert not check_linearizability([]).passed


def _random_register_history(rng: random.Random, clients: int, steps: int) -> list[RegisterOp]:
    """A linearizable history: each op takes effect at a random instant inside its interval."""
    ops: list[RegisterOp] = []
    effects: list[tuple[float, int, bool, str]] = []
    for n in range(clients * steps):
        start = rng.uniform(0, steps)
        end = start + rng.uniform(0.01, 1.5)
        effects.append((rng.uniform(start, end), n, rng.random() < 0.5, f"v{n}"))
        ops.append(RegisterOp(n, start, end, False, None))
    state: str | None = None
    for _, n, is_write, value in sorted(effects):
        op = ops[n]
        ops[n] = RegisterOp(n, op.start_s, op.end_s, is_write, value if is_write else state)
        state = value if is_write else state
    return ops


@pytest.mark.parametrize("seed", range(20))
def test_random_linearizable_histories_pass_and_a_damaged_one_fails(seed: int) -> None:
    rng = random.Random(seed)
    ops = _random_register_history(rng, clients=4, steps=40)
    assert is_linearizable(ops)
    reads = [op for op in ops if not op.is_write]
    victim = rng.choice(reads)
    damaged = [
        op if op is not victim else RegisterOp(op.id, op.start_s, op.end_s, False, "never-written") for op in ops
    ]
    assert not is_linearizable(damaged)
    assert [op.id for op in shrink(damaged)] == [victim.id]


def test_the_search_has_a_bound() -> None:
    ops = [RegisterOp(n, 0, math.inf, True, f"v{n}") for n in range(30)] + [RegisterOp(99, 1, 2, False, "nope")]
    with pytest.raises(SearchBudgetExceeded):
        is_linearizable(ops, max_states=1000)
