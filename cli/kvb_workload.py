"""What a kvb test sends: the request mix, the key space and the bytes of each request.

Shared by both engines: the python engine builds each request's bytes here, the wrk engine
renders the same mix as a Lua script (cli/kvb_wrk.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

OPS = ("get", "set")


class TargetError(Exception):
    """The URL cannot be benchmarked (message for the user)."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    base_path: str  # the URL's path, without a trailing slash ("" for most)

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise TargetError(f"kvb speaks plain HTTP/1.1 only; use the node's http:// address, not {url!r}")
        if not parts.hostname:
            raise TargetError(f"no host in {url!r}")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Workload:
    """One test: GETs with probability read_ratio, PUTs of value_size bytes otherwise."""

    name: str
    read_ratio: float
    keys: int
    key_prefix: str
    value_size: int

    def key_path(self, target: Target) -> str:
        """The path of every key but its number: base path, /v1/kv/ and the percent-encoded prefix."""
        return f"{target.base_path}/v1/kv/{quote(self.key_prefix, safe='')}"

    def ops(self) -> tuple[str, ...]:
        """The operations this test sends."""
        if self.read_ratio >= 1:
            return ("get",)
        if self.read_ratio <= 0:
            return ("set",)
        return OPS


class RequestMaker:
    """Builds request bytes fast: per request one random draw or two and a bytes join."""

    def __init__(self, workload: Workload, target: Target, token: str | None) -> None:
        self.read_ratio = workload.read_ratio
        self.keys = workload.keys
        path = workload.key_path(target).encode()
        auth = f"authorization: Bearer {token}\r\n".encode() if token else b""
        headers = b"host: " + target.host_header.encode() + b"\r\n" + auth
        self.get_head = b"GET " + path
        self.get_tail = b" HTTP/1.1\r\n" + headers + b"\r\n"
        value = b"x" * workload.value_size
        self.set_head = b"PUT " + path
        self.set_tail = b" HTTP/1.1\r\n" + headers + b"content-length: %d\r\n\r\n" % len(value) + value

    def next(self) -> tuple[int, bytes]:
        """(op index in OPS, request bytes) for a uniformly random key."""
        key = b"%d" % int(random.random() * self.keys)  # a third of randrange's cost
        if random.random() < self.read_ratio:
            return 0, self.get_head + key + self.get_tail
        return 1, self.set_head + key + self.set_tail
