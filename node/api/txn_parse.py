"""A transaction's JSON body as TxnOps: shapes, keys, values, TTLs and preconditions checked,
each refusal naming its op. Pure: authorization is the caller's `authorize(action, key)`.

    {"ops": [{"op": "set", "key": K, "value": TEXT | "value_base64": B64, "ttl": S,
              "if_version": V, "if_absent": true},
             {"op": "del", "key": K, "if_version": V},
             {"op": "check", "key": K, "if_version": V, "if_absent": true}]}
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest, PayloadTooLarge
from ..writes import TxnOp
from .http import JSON_INT_MAX, KEY_FORBIDDEN, check_key_characters, json_integer

Authorize = Callable[[str, str], None]  # (action, key); raises Forbidden
ACTION_OF = {"set": "write", "del": "delete", "check": "read"}


@dataclass(frozen=True, slots=True)
class TxnLimits:
    max_txn_ops: int
    max_key_bytes: int
    max_value_bytes: int
    max_ttl_s: int


def valid_key(raw: str, max_key_bytes: int, *, may_create: bool = True) -> str:
    """`may_create` False: a transaction's del or check, whose JSON names a key exactly, may
    name one the character rule now refuses (stored by an older version), so it can go."""
    if not raw:
        raise BadRequest("key must not be empty")
    if may_create:
        check_key_characters(raw)
    size = len(raw.encode("utf-8"))
    if size > max_key_bytes:
        raise BadRequest(f"key is {size} bytes; the limit is {max_key_bytes} (max_key_bytes)")
    return raw


def parse_txn(document: Any, limits: TxnLimits, authorize: Authorize | None) -> list[TxnOp]:
    """The ops of a transaction body; `authorize` None for a superuser (who may do anything)."""
    if not isinstance(document, dict) or not isinstance(document.get("ops"), list):
        raise BadRequest('transaction body must be {"ops": [...]}')
    raw_ops = document["ops"]
    if not raw_ops:
        raise BadRequest("transaction has no ops")
    if len(raw_ops) > limits.max_txn_ops:
        raise PayloadTooLarge(f"transaction has {len(raw_ops)} ops; the limit is {limits.max_txn_ops}")
    # Transactions carry up to max_txn_ops ops, so the common shape
    # {"op": "set", "key": str, "value": str} is checked inline (~1 us an op); any other op
    # goes through _op, which also produces the precise error.
    max_value_bytes = limits.max_value_bytes
    short_key_chars = limits.max_key_bytes // 4  # within the limit whatever the UTF-8
    ops: list[TxnOp] = []
    for index, raw in enumerate(raw_ops):
        if type(raw) is dict and len(raw) == 3 and raw.get("op") == "set":
            key, text = raw.get("key"), raw.get("value")
            if (
                type(key) is str
                and type(text) is str
                and 0 < len(key) <= short_key_chars
                and len(value := text.encode()) <= max_value_bytes
                and KEY_FORBIDDEN.search(key) is None
            ):
                if authorize is not None:
                    authorize("write", key)
                ops.append(TxnOp("set", key, value))
                continue
        ops.append(_op(index, raw, limits, authorize))
    return ops


def _op(index: int, raw: Any, limits: TxnLimits, authorize: Authorize | None) -> TxnOp:
    if not isinstance(raw, dict):
        raise BadRequest(f"op {index}: must be an object")
    kind = raw.get("op")
    if not isinstance(kind, str) or kind not in ACTION_OF:
        raise BadRequest(f"op {index}: 'op' must be set, del or check")
    key_raw = raw.get("key")
    if not isinstance(key_raw, str):
        raise BadRequest(f"op {index}: 'key' must be a string")
    key = valid_key(key_raw, limits.max_key_bytes, may_create=kind == "set")
    if authorize is not None:
        authorize(ACTION_OF[kind], key)
    value = _value(index, raw, limits.max_value_bytes) if kind == "set" else b""
    ttl_s = raw.get("ttl")
    if ttl_s is not None:
        ttl_s = json_integer(ttl_s, 1, limits.max_ttl_s)
        if ttl_s is None:
            raise BadRequest(f"op {index}: ttl must be an integer 1..{limits.max_ttl_s}")
    if_version = raw.get("if_version")
    if if_version is not None:
        if_version = json_integer(if_version, 0, JSON_INT_MAX)
        if if_version is None:
            raise BadRequest(f"op {index}: if_version must be a version: an integer 0..{JSON_INT_MAX}")
    if_absent = raw.get("if_absent", False)
    if not isinstance(if_absent, bool):
        raise BadRequest(f"op {index}: if_absent must be true or false")
    return TxnOp(kind, key, value, ttl_s, if_version, if_absent)


def _value(index: int, raw: dict[str, Any], max_value_bytes: int) -> bytes:
    if ("value" in raw) == ("value_base64" in raw):
        raise BadRequest(f"op {index}: set needs one of 'value' (text) or 'value_base64'")
    if "value" in raw:
        if not isinstance(raw["value"], str):
            raise BadRequest(f"op {index}: value must be text; send bytes as value_base64")
        value = raw["value"].encode("utf-8")
    else:
        try:
            value = base64.b64decode(raw["value_base64"], validate=True)
        except (TypeError, ValueError):
            raise BadRequest(f"op {index}: value_base64 is not valid base64") from None
    if len(value) > max_value_bytes:
        raise PayloadTooLarge(f"op {index}: value is {len(value)} bytes; the limit is {max_value_bytes}")
    return value
