"""Logging in to a node over HTTP as a user of its catalog, and clients that carry the token."""

from __future__ import annotations

import httpx

from support.harness import NodeProcess

TIMEOUT_S = 10


def login(node: NodeProcess, name: str, password: str) -> httpx.Response:
    """POST /v1/auth/login: the node's answer as it is, a refusal included."""
    return httpx.post(f"{node.url}/v1/auth/login", json={"username": name, "password": password}, timeout=TIMEOUT_S)


def login_token(node: NodeProcess, name: str, password: str) -> str:
    """The token of a login that must succeed."""
    response = login(node, name, password)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def bearer(node: NodeProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=node.url, headers={"authorization": f"Bearer {token}"}, timeout=TIMEOUT_S)


def session(node: NodeProcess, name: str, password: str) -> httpx.Client:
    """A client logged in as `name`; the login must succeed."""
    return bearer(node, login_token(node, name, password))
