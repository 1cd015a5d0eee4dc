"""Asking another node something as the replication user: the login, and IDENTIFY.

Every answer is checked before use: a login must give a token, an identify must parse as
`protocol.Identity`; anything else is a ReplicationError naming the URL and what came back.
Callers can tell a node that is not there (`PeerUnreachable`: no answer, or a 5xx while it
starts or stops) from one that answers but cannot be used (any other ReplicationError: a
refused login, a missing role, something that is not a kvstored node). The receiver's WAL
stream and base backup requests are in replica.py; this module owns no state but the tokens.
"""

from __future__ import annotations

from typing import Any

import httpx

from kvstore.node.config import Settings

from .protocol import Identity, ReplicationError, parse_identity

PREVIEW_CHARS = 120
# Answered without credentials: only the system identifier, so a node can tell a node of its
# own cluster before it sends the replication user's password anywhere (rejoin).
SYSTEM_PATH = "/v1/replication/system"


class PeerUnreachable(ReplicationError):
    """The node did not answer, or answered that it cannot serve right now (5xx)."""


def credentials(settings: Settings) -> dict[str, str]:
    if not settings.replication_user or not settings.replication_password:
        raise ReplicationError(
            "no replication credentials: set KVSTORE_REPLICATION_USER and KVSTORE_REPLICATION_PASSWORD "
            "(a user with the replication role on the primary)"
        )
    return {"username": settings.replication_user, "password": settings.replication_password}


def error_text(response: httpx.Response) -> str:
    """`status code: message` of a kvstored error, else the status and the start of the body."""
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {preview(response)}"


def preview(response: httpx.Response) -> str:
    """The start of a body on one line (an HTML page included)."""
    return " ".join(response.text.split())[:PREVIEW_CHARS] or "(empty body)"


async def request(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request; PeerUnreachable when the node does not answer, or answers 5xx."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TransportError as error:  # refused, reset, timed out, not HTTP at all
        raise PeerUnreachable(f"{url} did not answer: {type(error).__name__}: {error}") from None
    except httpx.HTTPError as error:  # an answer httpx cannot read (a bad encoding, say)
        raise ReplicationError(f"{url} answered something unreadable: {type(error).__name__}: {error}") from None
    if response.status_code >= 500:
        raise PeerUnreachable(f"{url} cannot serve now: {error_text(response)}")
    return response


async def login(client: httpx.AsyncClient, url: str, settings: Settings) -> dict[str, str]:
    """The replication user's authorization header for the node at `url`."""
    response = await request(client, "POST", f"{url}/v1/auth/login", json=credentials(settings))
    if response.status_code != 200:
        raise ReplicationError(
            f"login to {url} as {settings.replication_user!r} failed: {error_text(response)}; check "
            f"KVSTORE_REPLICATION_USER and KVSTORE_REPLICATION_PASSWORD here against that user on {url}"
        )
    try:
        token = response.json()["token"]
    except (ValueError, KeyError, TypeError):
        token = None
    if not isinstance(token, str) or not token:
        raise ReplicationError(
            f"{url} answered the login with something that is not a kvstored node: "
            f"{response.status_code} {preview(response)}"
        )
    return {"authorization": f"Bearer {token}"}


class PeerLogins:
    """The replication user's headers for each node URL this node talks to. A login costs
    the peer an argon2 hash, so it is made once per URL and again only after a 401 (an expired
    or unknown token), not on every reconnect, every peer check or every look for a new primary."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._headers: dict[str, dict[str, str]] = {}

    async def headers(self, client: httpx.AsyncClient, url: str) -> dict[str, str]:
        if url not in self._headers:
            self._headers[url] = await login(client, url, self._settings)
        return self._headers[url]

    def check(self, response: httpx.Response, url: str) -> bool:
        """Forget the token a peer answered 401 to (the next request logs in again); True if it did."""
        if response.status_code == 401:
            return self._headers.pop(url, None) is not None
        return False

    async def get(self, client: httpx.AsyncClient, url: str, path: str) -> httpx.Response:
        """GET as the replication user; a token the peer no longer takes is replaced once."""
        response = await request(client, "GET", f"{url}{path}", headers=await self.headers(client, url))
        if self.check(response, url):
            response = await request(client, "GET", f"{url}{path}", headers=await self.headers(client, url))
        return response


async def identify(client: httpx.AsyncClient, url: str, logins: PeerLogins) -> Identity:
    """What the node at `url` says about itself (system, role, timeline, history)."""
    response = await logins.get(client, url, "/v1/replication/identify")
    if response.status_code != 200:
        raise ReplicationError(f"{url} did not identify itself: {error_text(response)}")
    try:
        document = response.json()
    except ValueError:
        raise ReplicationError(
            f"{url} answered the identify request with something that is not a kvstored node: "
            f"{response.status_code} {preview(response)}"
        ) from None
    return parse_identity(url, document)
