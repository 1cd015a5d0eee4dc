"""Waiting for a condition that other processes bring about."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

POLL_INTERVAL_S = 0.1


def wait_until(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Polls `check`; a node restarting in between (refused connections, 503) is not an answer yet."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, AssertionError):
            pass
        time.sleep(POLL_INTERVAL_S)
    raise AssertionError(f"timed out waiting for {what}")
