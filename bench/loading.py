"""Filling a node with keys before a benchmark measures it: `key:00000000`, `key:00000001`,
... in transactions, from several connections at once (one connection leaves the node idle
between round trips and makes loading a million keys take minutes)."""

from __future__ import annotations

import asyncio

import httpx


async def load_keys(
    url: str, headers: dict[str, str], keys: int, value: str, *, txn_ops: int, concurrency: int, timeout_s: float
) -> None:
    batches = iter(range(0, keys, txn_ops))  # shared: each worker takes the next batch
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s) as client:

        async def worker() -> None:
            for start in batches:
                ops = [
                    {"op": "set", "key": f"key:{i:08d}", "value": value}
                    for i in range(start, min(start + txn_ops, keys))
                ]
                (await client.post("/v1/txn", json={"ops": ops})).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
