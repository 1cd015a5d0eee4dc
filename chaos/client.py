"""The nodes as the superuser, through kvstore.client: one client per node URL, and the admin
calls a run makes.

Not the workload's request path (workload.py records its own outcomes); this is for the
scenario and the checks, where an error is an error (a `ClientError`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson

from kvstore.client import Call, Client, ClientError, Retry

ADMIN_TIMEOUT_S = 30.0  # promotion, rejoin and a digest of a big store take a while
REJOIN_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.1
# One retry: a node restarted from a base backup may not know the token (the client logs in
# again on a 401); anything else is the scenario's to judge.
ADMIN_RETRY = Retry(attempts=2, first_s=0.05, max_s=0.1)


class NodeClients:
    """The superuser's client for each node URL, shared by every thread (httpx's client is). A
    login costs the node an argon2 hash, so each client logs in once, and again after a 401."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self._clients: dict[tuple[str, float, Retry], Client] = {}
        self._lock = threading.Lock()

    def admin(self, url: str) -> Client:
        return self.pinned(url, ADMIN_TIMEOUT_S, ADMIN_RETRY)

    def pinned(self, url: str, timeout_s: float, retry: Retry) -> Client:
        """The shared client of the node at `url` alone (a scenario says which node it means)."""
        with self._lock:
            client = self._clients.get((url, timeout_s, retry))
            if client is None:
                client = self._clients[url, timeout_s, retry] = Client(
                    url, username=self.username, password=self.password, pinned=True, retry=retry, timeout_s=timeout_s
                )
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


class NodeClient:
    """Admin calls on one node; a refusal or no answer raises `ClientError`."""

    def __init__(self, url: str, clients: NodeClients) -> None:
        self.url = url
        self._client = clients.admin(url)

    def request(self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None) -> Any:
        call = Call(method, path, (200, 202), params=params or {})
        if json is not None:
            call.body = orjson.dumps(json)
            call.headers["content-type"] = "application/json"
        return self._client.request(call).document()

    def status(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/status"))

    def digest(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/admin/digest"))

    def promote(self) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/admin/promote"))

    def rejoin(self, primary_url: str) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/admin/rejoin", json={"primary": primary_url}))

    def rejoin_and_wait(self, primary_url: str) -> dict[str, Any]:
        """Rejoin, then wait until the node, which restarts itself in place, answers as a replica."""
        plan = self.rejoin(primary_url)
        deadline = time.monotonic() + REJOIN_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if self.status()["role"] == "replica":
                    return plan
            except ClientError:  # restarting: refused connections, 503
                pass
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"{self.url} did not become a replica of {primary_url} within {REJOIN_TIMEOUT_S:g} s")

    def checkpoint(self) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/admin/checkpoint"))

    def txn(self, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/txn", json={"ops": ops}))

    def scan(self, prefix: str, page_keys: int = 10_000) -> list[dict[str, Any]]:
        """Every key under `prefix`, with its version, page by page."""
        found: list[dict[str, Any]] = []
        after = ""
        while True:
            page = self.request("GET", "/v1/kv", params={"prefix": prefix, "after": after, "limit": str(page_keys)})
            found += page["keys"]
            if page["next_after"] is None:
                return found
            after = page["next_after"]
