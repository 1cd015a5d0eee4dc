"""Writing the key space before a test that reads it, so its GETs hit: POST /v1/txn in batches."""

from __future__ import annotations

import httpx

from .kvb_workload import Workload

# Keys set per transaction: the node's max_txn_ops is 1000 by default, and 100 keeps each
# request small on a node configured lower than that.
BATCH = 100
TIMEOUT_S = 30.0


class PreloadError(Exception):
    pass


def preload(url: str, token: str | None, hint: str, workload: Workload) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    value = "x" * workload.value_size
    with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client:
        for start in range(0, workload.keys, BATCH):
            keys = range(start, min(start + BATCH, workload.keys))
            ops = [{"op": "set", "key": f"{workload.key_prefix}{n}", "value": value} for n in keys]
            try:
                response = client.post("/v1/txn", json={"ops": ops})
            except httpx.HTTPError as error:
                raise PreloadError(f"cannot reach {url}: {error}") from None
            if response.status_code == 401:
                raise PreloadError(f"the node at {url} refused the token (401): {hint}")
            if response.status_code >= 400:
                raise PreloadError(
                    f"preloading {workload.keys} keys under {workload.key_prefix!r} failed: "
                    f"{response.status_code} {_message(response)}"
                )


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
