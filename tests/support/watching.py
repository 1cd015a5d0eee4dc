"""Reading a GET /v1/watch stream in a test: a thread parses its lines into a queue."""

from __future__ import annotations

import queue
import threading
from typing import Any

import httpx
import orjson

WAIT_S = 30.0


class Watch:
    """A watch stream read by a thread: its parsed lines land in a queue."""

    def __init__(self, client: httpx.Client, params: dict[str, str]) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status: int | None = None
        self._client = client
        self._params = params
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._opened.wait(WAIT_S), "the watch did not answer"

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/v1/watch", params=self._params, timeout=None) as response:
                self.status = response.status_code
                self._opened.set()
                for line in response.iter_lines():
                    if line:
                        self.lines.put(orjson.loads(line))
        except httpx.HTTPError:
            pass
        finally:
            self._opened.set()

    def events(self, count: int) -> list[dict[str, Any]]:
        """The next `count` change events (progress lines skipped)."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            line = self.lines.get(timeout=WAIT_S)
            if line["type"] != "progress":
                found.append(line)
        return found

    def close(self) -> None:
        self._client.close()
