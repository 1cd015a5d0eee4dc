"""Transaction bodies parsed in-process: shapes, limits, keys, values and grants."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kvstore.node.api.txn_parse import TxnLimits, parse_txn, valid_key
from kvstore.node.errors import BadRequest, Forbidden, PayloadTooLarge
from kvstore.node.writes import TxnOp

LIMITS = TxnLimits(max_txn_ops=4, max_key_bytes=16, max_value_bytes=8, max_ttl_s=60)


def test_every_op_kind_and_field_becomes_a_txn_op() -> None:
    ops = parse_txn(
        {
            "ops": [
                {"op": "set", "key": "a", "value": "x"},
                {"op": "set", "key": "b", "value_base64": base64.b64encode(b"\x00\xff").decode(), "ttl": 5},
                {"op": "del", "key": "c", "if_version": 3},
                {"op": "check", "key": "d", "if_absent": True},
            ]
        },
        LIMITS,
        None,
    )
    assert ops == [
        TxnOp("set", "a", b"x"),
        TxnOp("set", "b", b"\x00\xff", 5),
        TxnOp("del", "c", b"", None, 3),
        TxnOp("check", "d", b"", None, None, True),
    ]


@pytest.mark.parametrize(
    ("document", "error", "message"),
    [
        ([], BadRequest, 'transaction body must be {"ops": [...]}'),
        ({"ops": []}, BadRequest, "transaction has no ops"),
        ({"ops": [{"op": "check", "key": "k"}] * 5}, PayloadTooLarge, "5 ops; the limit is 4"),
        ({"ops": ["set"]}, BadRequest, "op 0: must be an object"),
        ({"ops": [{"op": "get", "key": "k"}]}, BadRequest, "op 0: 'op' must be set, del or check"),
        ({"ops": [{"op": {}, "key": "k"}]}, BadRequest, "op 0: 'op' must be set, del or check"),
        ({"ops": [{"op": "del", "key": 7}]}, BadRequest, "op 0: 'key' must be a string"),
        ({"ops": [{"op": "set", "key": "k"}]}, BadRequest, "set needs one of 'value' (text) or 'value_base64'"),
        ({"ops": [{"op": "set", "key": "k", "value": 1}]}, BadRequest, "value must be text"),
        ({"ops": [{"op": "set", "key": "k", "value_base64": "%%"}]}, BadRequest, "not valid base64"),
        ({"ops": [{"op": "set", "key": "k", "value": "123456789"}]}, PayloadTooLarge, "9 bytes; the limit is 8"),
        ({"ops": [{"op": "set", "key": "k", "value": "v", "ttl": 61}]}, BadRequest, "ttl must be an integer 1..60"),
        ({"ops": [{"op": "del", "key": "k", "if_version": -1}]}, BadRequest, "if_version must be a version"),
        ({"ops": [{"op": "check", "key": "k", "if_absent": "yes"}]}, BadRequest, "if_absent must be true or false"),
        ({"ops": [{"op": "set", "key": "k" * 17, "value": "v"}]}, BadRequest, "key is 17 bytes; the limit is 16"),
        ({"ops": [{"op": "set", "key": "a\x01b", "value": "v"}]}, BadRequest, "control"),
    ],
)
def test_a_bad_body_is_refused_naming_what_is_wrong(document: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        parse_txn(document, LIMITS, None)
    assert message in str(raised.value)


def test_each_op_is_authorized_for_its_own_action() -> None:
    asked: list[tuple[str, str]] = []

    def authorize(action: str, key: str) -> None:
        asked.append((action, key))
        if key.startswith("secret:"):
            raise Forbidden(f"may not {action} {key!r}")

    body = {"ops": [{"op": "set", "key": "a", "value": "x"}, {"op": "del", "key": "b"}, {"op": "check", "key": "c"}]}
    parse_txn(body, LIMITS, authorize)
    assert asked == [("write", "a"), ("delete", "b"), ("read", "c")]
    with pytest.raises(Forbidden):
        parse_txn({"ops": [{"op": "set", "key": "secret:x", "value": "x"}]}, LIMITS, authorize)


def test_a_key_the_character_rule_refuses_can_still_be_deleted_or_checked() -> None:
    old = "old\x01key"  # stored by an older version, before control characters were refused
    assert parse_txn({"ops": [{"op": "del", "key": old}]}, LIMITS, None) == [TxnOp("del", old)]
    with pytest.raises(BadRequest):
        valid_key(old, 16)
    assert valid_key(old, 16, may_create=False) == old
    with pytest.raises(BadRequest, match="must not be empty"):
        valid_key("", 16)
