"""The checkers: pure functions from a recorded history (and the cluster's final state) to
a `Verdict`. Reading that state is the runner's job; nothing here does I/O.

- durability: every acknowledged write survives, with its value or a value that may
  legitimately have replaced it;
- convergence: every replica's digest equals the primary's once the load has stopped;
- linearizability: each register key's history has a legal sequential order
  (linearizability.py), and a violation comes with a small witness.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .history import REGISTER_PREFIX, Op, OpKind, Outcome
from .linearizability import RegisterOp, SearchBudgetExceeded, is_linearizable, prune, shrink

MAX_LISTED = 50  # violations spelled out in a verdict; the count is always complete


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    passed: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def expectation(name: str, passed: bool, summary: str, **details: Any) -> Verdict:
    """A scenario's own check (the node refused a damaged WAL, the partition held, ...)."""
    return Verdict(name, passed, summary, details)


# -- durability -------------------------------------------------------------------------


def written_keys(ops: Iterable[Op]) -> list[str]:
    """Every key some write was attempted on: the final state the durability check needs."""
    return sorted({op.key for op in ops if op.kind is OpKind.WRITE})


def check_durability(ops: Sequence[Op], final_values: Mapping[str, str | None]) -> Verdict:
    """For each written key, the final value must come from a write that was acknowledged or
    in doubt and that no acknowledged write began after (an unknown write may land late, so
    it is never ruled out); absent is allowed only when no write was acknowledged."""
    writes: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind is OpKind.WRITE:
            writes[op.key].append(op)
    lost: list[dict[str, Any]] = []
    unexpected: list[dict[str, Any]] = []
    acknowledged = 0
    for key, attempts in sorted(writes.items()):
        acked = [op for op in attempts if op.outcome is Outcome.OK]
        acknowledged += len(acked)
        latest_ack_start = max((op.start_s for op in acked), default=-math.inf)
        allowed = [
            op
            for op in attempts
            if op.outcome is Outcome.UNKNOWN or (op.outcome is Outcome.OK and op.end_s >= latest_ack_start)
        ]
        found = final_values.get(key)
        if found is None and not acked:
            continue
        if any(op.value == found for op in allowed):
            continue
        survivors = [op for op in allowed if op.outcome is Outcome.OK]
        if found is None or any(op.value == found for op in acked):
            lost.extend({**op.to_json(), "found": found} for op in survivors)
        else:  # a value no acknowledged or pending write could leave there
            unexpected.append({"key": key, "found": found, "allowed": [op.value for op in allowed]})
    passed = not lost and not unexpected
    summary = (
        f"all {acknowledged} acknowledged writes on {len(writes)} keys survived"
        if passed
        else f"{len(lost)} acknowledged writes lost, {len(unexpected)} keys hold a value no write could leave"
    )
    details = {
        "keys_checked": len(writes),
        "acknowledged_writes": acknowledged,
        "lost_write_count": len(lost),
        "lost_writes": lost[:MAX_LISTED],
        "unexpected_value_count": len(unexpected),
        "unexpected_values": unexpected[:MAX_LISTED],
    }
    return Verdict("durability", passed, summary, details)


# -- convergence ------------------------------------------------------------------------


def check_convergence(primary: str, digests: Mapping[str, Mapping[str, Any] | None]) -> Verdict:
    """`digests` maps each node to its `/v1/admin/digest` answer (None: it did not answer)."""
    expected = digests.get(primary)
    if expected is None:
        return Verdict("convergence", False, f"the primary {primary} gave no digest", {"nodes": dict(digests)})
    divergent = sorted(
        name
        for name, document in digests.items()
        if document is None
        or (document["digest"], document["apply_lsn"]) != (expected["digest"], expected["apply_lsn"])
    )
    summary = (
        f"{len(digests)} nodes hold the same {expected['keys']} keys at LSN {expected['apply_lsn']}"
        if not divergent
        else f"{', '.join(divergent)} differ from the primary {primary}"
    )
    return Verdict(
        "convergence", not divergent, summary, {"primary": primary, "divergent": divergent, "nodes": dict(digests)}
    )


# -- linearizability --------------------------------------------------------------------


def register_ops(ops: Iterable[Op]) -> dict[str, list[RegisterOp]]:
    """The register keys' histories in the search's terms: failed ops and unanswered reads
    say nothing about the register, unknown writes may land at any time after their start."""
    by_key: dict[str, list[RegisterOp]] = defaultdict(list)
    for op in ops:
        if not op.key.startswith(REGISTER_PREFIX) or op.outcome is Outcome.FAILED:
            continue
        if op.kind is OpKind.READ and op.outcome is not Outcome.OK:
            continue
        end_s = op.end_s if op.outcome is Outcome.OK else math.inf
        by_key[op.key].append(RegisterOp(op.id, op.start_s, end_s, op.kind is OpKind.WRITE, op.value))
    return by_key


def check_linearizability(ops: Sequence[Op]) -> Verdict:
    recorded = {op.id: op for op in ops}
    keys: dict[str, dict[str, Any]] = {}
    for key, history in sorted(register_ops(ops).items()):
        history = prune(history)
        try:
            ok = is_linearizable(history)
        except SearchBudgetExceeded as error:
            keys[key] = {"ops": len(history), "linearizable": None, "error": str(error)}
            continue
        keys[key] = {"ops": len(history), "linearizable": ok}
        if not ok:
            witness = shrink(history)
            keys[key]["witness"] = [recorded[op.id].to_json() for op in witness]
    bad = [key for key, result in keys.items() if result["linearizable"] is not True]
    total = sum(result["ops"] for result in keys.values())
    summary = (
        f"{len(keys)} registers, {total} operations: linearizable"
        if not bad
        else f"not shown linearizable: {', '.join(bad)}"
    )
    return Verdict(
        "linearizability",
        bool(keys) and not bad,
        summary if keys else "no register operations recorded",
        {"keys": keys},
    )
