"""Is a single register's history linearizable? Wing & Gong's search with Lowe's
just-in-time linearization and memoisation of (ops linearized, register state), as
Porcupine does. Pure; the checker in checkers.py builds the per-key inputs.

An op is a write of a value (unique per key) or a read that returned a value (None: the
key was absent). A write whose outcome is unknown took effect at some point after it
started, or never: it gets end = +inf, and may then be linearized last, where it changes
nothing anyone saw. Failed ops and unanswered reads carry no information: the caller
leaves them out.

`shrink` turns a violating history into a small violating sub-history. It only ever drops
*closed* sets (dropping a write drops the reads that returned its value): a closed subset
of a linearizable history is linearizable, so what it keeps is a real witness and never an
artefact of a missing write.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Memoised search states one check may visit before it gives up (memory: ~100 B each).
MAX_STATES = 2_000_000
# Linearizability checks one shrink may spend.
SHRINK_MAX_CHECKS = 400


class SearchBudgetExceeded(Exception):
    """The search visited MAX_STATES states without an answer: the history is too concurrent."""


@dataclass(frozen=True, slots=True)
class RegisterOp:
    id: int
    start_s: float
    end_s: float  # math.inf when the outcome is unknown
    is_write: bool
    value: str | None


def prune(ops: Iterable[RegisterOp]) -> list[RegisterOp]:
    """Drop unknown-outcome writes nobody read: linearized last they change nothing, so the
    verdict is the same with or without them, and the search is smaller."""
    ops = list(ops)
    read_values = {op.value for op in ops if not op.is_write}
    return [op for op in ops if not (op.is_write and math.isinf(op.end_s) and op.value not in read_values)]


def is_linearizable(ops: Sequence[RegisterOp], max_states: int = MAX_STATES) -> bool:
    """Whether some order of `ops`, each placed between its start and end, is a legal run of a
    register that starts absent."""
    count = len(ops)
    # A doubly linked list of call and return events in time order; node 0 is the head.
    # At equal times calls sort first: touching intervals count as concurrent.
    events = sorted(
        [(op.start_s, 0, index) for index, op in enumerate(ops)]
        + [(op.end_s, 1, index) for index, op in enumerate(ops)]
    )
    size = 2 * count + 1
    nxt = list(range(1, size)) + [-1]
    prv = list(range(-1, size - 1))
    op_of = [0] * size
    is_call = [False] * size
    return_node = [0] * count
    for node, (_, kind, index) in enumerate(events, start=1):
        op_of[node] = index
        is_call[node] = kind == 0
        if kind == 1:
            return_node[index] = node

    def unlink(node: int) -> None:
        nxt[prv[node]] = nxt[node]
        if nxt[node] != -1:
            prv[nxt[node]] = prv[node]

    def relink(node: int) -> None:  # undoes `unlink`, in reverse order of the unlinks
        nxt[prv[node]] = node
        if nxt[node] != -1:
            prv[nxt[node]] = node

    state: str | None = None
    linearized = 0
    seen: set[tuple[int, str | None]] = set()
    stack: list[tuple[int, str | None]] = []
    entry = nxt[0]
    while nxt[0] != -1:
        index = op_of[entry]
        if is_call[entry]:
            op = ops[index]
            if op.is_write or op.value == state:
                after = op.value
                bits = linearized | (1 << index)
                if (bits, after) not in seen:
                    seen.add((bits, after))
                    if len(seen) > max_states:
                        raise SearchBudgetExceeded(f"more than {max_states} states for {count} operations")
                    stack.append((entry, state))
                    state, linearized = after, bits
                    unlink(entry)
                    unlink(return_node[index])
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:  # an op returned before it could be linearized: undo the latest choice
            if not stack:
                return False
            entry, state = stack.pop()
            index = op_of[entry]
            linearized &= ~(1 << index)
            relink(return_node[index])
            relink(entry)
            entry = nxt[entry]
    return True


def shrink(ops: Sequence[RegisterOp], max_checks: int = SHRINK_MAX_CHECKS) -> list[RegisterOp]:
    """A small non-linearizable closed sub-history of `ops`, which must not be linearizable."""
    writes_by_value: dict[str | None, list[RegisterOp]] = {}
    for op in ops:
        if op.is_write:
            writes_by_value.setdefault(op.value, []).append(op)
    checks = 0

    def closed(subset: Iterable[RegisterOp]) -> list[RegisterOp]:
        chosen = {op.id: op for op in subset}
        for op in list(chosen.values()):
            if not op.is_write:
                chosen.update((write.id, write) for write in writes_by_value.get(op.value, []))
        return sorted(chosen.values(), key=lambda op: (op.start_s, op.id))

    def violates(subset: list[RegisterOp]) -> bool:
        nonlocal checks
        checks += 1
        try:
            return not is_linearizable(subset)
        except SearchBudgetExceeded:
            return False  # no answer is no witness

    by_start = sorted(ops, key=lambda op: (op.start_s, op.id))
    # The shortest violating prefix (by start), closed: violation only grows with the prefix.
    low, high = 1, len(by_start)
    while low < high:
        middle = (low + high) // 2
        if violates(closed(by_start[:middle])):
            high = middle
        else:
            low = middle + 1
    current = closed(by_start[:low])
    # Then the latest cut of ops that ended first that still violates (also monotone).
    by_end = sorted(current, key=lambda op: (op.end_s, op.id))
    low, high = 0, len(by_end) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if violates(closed(by_end[middle:])):
            low = middle
        else:
            high = middle - 1
    current = closed(by_end[low:])
    # Then greedy removal, in chunks that halve, while the check budget lasts.
    chunk = max(1, len(current) // 2)
    while checks < max_checks:
        start = 0
        while start < len(current) and checks < max_checks:
            candidate = _without(current, current[start : start + chunk])
            if candidate and violates(candidate):
                current = candidate
            else:
                start += chunk
        if chunk == 1:
            break
        chunk //= 2
    return current


def _without(ops: list[RegisterOp], removed: Sequence[RegisterOp]) -> list[RegisterOp]:
    """`ops` minus `removed`, and minus the reads that saw only removed writes' values."""
    gone = {op.id for op in removed}
    kept = [op for op in ops if op.id not in gone]
    lost_values = {op.value for op in removed if op.is_write} - {op.value for op in kept if op.is_write}
    return [op for op in kept if op.is_write or op.value not in lost_values]
