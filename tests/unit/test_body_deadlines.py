"""BodyDeadlines: a body read is cancelled once its deadline passes (never before, at most a tick
after), a finished read is never cancelled, and a cancellation from elsewhere stays one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kvstore.node.api.deadlines import TICK_S, BodyDeadlines


async def _read(deadlines: BodyDeadlines, body: asyncio.Future[bytes]) -> str:
    task: Any = asyncio.current_task()
    tick = deadlines.start(task)
    try:
        await body
    except asyncio.CancelledError:
        if not deadlines.expired(task):
            raise
        return "timed out"
    finally:
        deadlines.finish(tick, task)
    await asyncio.sleep(0)  # the task goes on normally afterwards: no cancellation left pending
    return "read"


def test_a_stalled_read_times_out_after_its_deadline_and_a_prompt_one_does_not() -> None:
    asyncio.run(_stalled_and_prompt())


async def _stalled_and_prompt() -> None:
    loop = asyncio.get_running_loop()
    deadlines = BodyDeadlines(0.2)
    stalled: asyncio.Future[bytes] = loop.create_future()
    prompt: asyncio.Future[bytes] = loop.create_future()
    started = loop.time()
    slow_task = asyncio.create_task(_read(deadlines, stalled))
    quick_task = asyncio.create_task(_read(deadlines, prompt))
    await asyncio.sleep(0.05)
    prompt.set_result(b"x")
    assert await quick_task == "read"
    assert await slow_task == "timed out"
    waited = loop.time() - started
    assert waited + 0.01 >= 0.2 and waited < 0.2 + TICK_S + 1.0
    assert deadlines._buckets == {}  # noqa: SLF001 - every bucket's timer ran and emptied it


def test_a_cancellation_from_elsewhere_is_not_a_timeout() -> None:
    asyncio.run(_cancelled_elsewhere())


async def _cancelled_elsewhere() -> None:
    deadlines = BodyDeadlines(5.0)
    body: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_read(deadlines, body))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(not bucket for bucket in deadlines._buckets.values())  # noqa: SLF001
