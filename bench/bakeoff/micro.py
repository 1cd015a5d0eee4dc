"""The micro section: timeit of the operations on a node's hot path (token check, WAL record encode, JSON)."""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass

from .http_load import VALUE


@dataclass
class MicroResult:
    """One timed operation."""

    name: str
    ns_per_op: float
    note: str = ""

    @property
    def ops_per_s(self) -> float:
        return 1e9 / self.ns_per_op


def time_op(op: Callable[[], object]) -> float:
    """Nanoseconds per call: best of 5 repeats of an auto-ranged (>= 0.2 s) loop."""
    timer = timeit.Timer(op)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=5, number=number)) / number * 1e9


def run_micro() -> list[MicroResult]:
    import google_crc32c
    import jwt
    import msgpack
    import orjson

    secret = "kvstore-bench-secret-0123456789abcdef"  # >= 32 bytes, as PyJWT wants for HS256
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "role": "writer", "iat": now, "exp": now + 3600}, secret, "HS256")
    record = {"op": "put", "key": "k1234", "value": VALUE, "lsn": 123_456_789, "ts": time.time_ns()}
    packed: bytes = msgpack.packb(record)
    small = {"ok": True, "key": "k1234", "lsn": 123_456_789, "role": "primary", "lag_ms": 1.25}

    return [
        MicroResult(
            "jwt.decode HS256",
            time_op(lambda: jwt.decode(token, secret, algorithms=["HS256"])),
            f"{len(token)}-char token, verifies signature + exp",
        ),
        MicroResult("msgpack.packb(record)", time_op(lambda: msgpack.packb(record)), f"{len(packed)} B out"),
        MicroResult(
            "google_crc32c.value(packed)",
            time_op(lambda: google_crc32c.value(packed)),
            f"{len(packed)} B in, implementation={google_crc32c.implementation}",
        ),
        MicroResult(
            "packb + crc32c",
            time_op(lambda: google_crc32c.value(msgpack.packb(record))),
            "one WAL-record encode",
        ),
        MicroResult("json.dumps(dict)", time_op(lambda: json.dumps(small)), "returns str"),
        MicroResult("json.dumps(dict).encode()", time_op(lambda: json.dumps(small).encode()), "bytes, like orjson"),
        MicroResult("orjson.dumps(dict)", time_op(lambda: orjson.dumps(small)), "returns bytes"),
    ]
