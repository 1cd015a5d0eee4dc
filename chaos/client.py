"""HTTP to the nodes as the superuser: one token per node, and the admin calls a run makes.

Not the workload's request path (workload.py records its own outcomes); this is for the
scenario and the checks, where an error is an error.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

ADMIN_TIMEOUT_S = 30.0  # promotion, rejoin and a digest of a big store take a while
LOGIN_TIMEOUT_S = 10.0
REJOIN_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.1


class Tokens:
    """The superuser's token for each node URL, shared by every thread. A login costs the node
    an argon2 hash, so it happens once per node, and again only after a 401."""

    def __init__(self, username: str, password: str) -> None:
        self._credentials = {"username": username, "password": password}
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> str:
        with self._lock:
            if url not in self._tokens:
                response = httpx.post(f"{url}/v1/auth/login", json=self._credentials, timeout=LOGIN_TIMEOUT_S)
                response.raise_for_status()
                self._tokens[url] = str(response.json()["token"])
            return self._tokens[url]

    def forget(self, url: str) -> None:
        with self._lock:
            self._tokens.pop(url, None)

    def headers(self, url: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.get(url)}"}


class NodeClient:
    """Admin calls on one node; a non-2xx answer raises `httpx.HTTPStatusError`."""

    def __init__(self, url: str, tokens: Tokens, timeout_s: float = ADMIN_TIMEOUT_S) -> None:
        self.url = url
        self._tokens = tokens
        self._timeout_s = timeout_s

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for _ in range(2):  # a node restarted from a base backup may not know the token: log in again
            response = httpx.request(
                method, f"{self.url}{path}", headers=self._tokens.headers(self.url), timeout=self._timeout_s, **kwargs
            )
            if response.status_code != 401:
                break
            self._tokens.forget(self.url)
        response.raise_for_status()
        return response

    def status(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/status").json())

    def digest(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/admin/digest").json())

    def promote(self) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/admin/promote").json())

    def rejoin(self, primary_url: str) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/admin/rejoin", json={"primary": primary_url}).json())

    def rejoin_and_wait(self, primary_url: str) -> dict[str, Any]:
        """Rejoin, then wait until the node, which restarts itself in place, answers as a replica."""
        plan = self.rejoin(primary_url)
        deadline = time.monotonic() + REJOIN_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if self.status()["role"] == "replica":
                    return plan
            except httpx.HTTPError:  # restarting: refused connections, 503
                pass
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"{self.url} did not become a replica of {primary_url} within {REJOIN_TIMEOUT_S:g} s")

    def checkpoint(self) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/admin/checkpoint").json())

    def txn(self, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/txn", json={"ops": ops}).json())

    def scan(self, prefix: str, page_keys: int = 10_000) -> list[dict[str, Any]]:
        """Every key under `prefix`, with its version, page by page."""
        found: list[dict[str, Any]] = []
        after = ""
        while True:
            page = self.request("GET", "/v1/kv", params={"prefix": prefix, "after": after, "limit": page_keys}).json()
            found += page["keys"]
            if page["next_after"] is None:
                return found
            after = page["next_after"]
