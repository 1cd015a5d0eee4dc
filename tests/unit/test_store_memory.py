"""The store's own memory estimate (kvstore_memory_usage_bytes{kind="store_estimate"}) against
what Python actually allocated for the same entries, as tracemalloc counts it."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from kvstore.node import records
from kvstore.node.store import Store


@pytest.mark.parametrize(("keys", "value_bytes"), [(20_000, 16), (5_000, 2_000)])
def test_estimate_is_close_to_what_was_allocated(keys: int, value_bytes: int) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = Store()
        for n in range(keys):
            # Values made one by one, as a write's body is: no object shared between entries.
            value = n.to_bytes(4, "big") * (value_bytes // 4)
            store.apply(records.set_record(f"user:{n:08d}", value, n + 1, 1_700_000_000_000 + n, 0), n + 1)
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimate = store.memory_estimate()
    assert len(store) == keys
    # Within a quarter either way: allocated includes the store's sorted index's internal lists
    # and the allocator's rounding, the estimate counts small ints the interpreter shares.
    assert 0.75 * allocated <= estimate <= 1.25 * allocated, (estimate, allocated)


def test_an_empty_store_estimates_its_tables_only() -> None:
    store = Store()
    assert 0 < store.memory_estimate() < 1024 * 1024
