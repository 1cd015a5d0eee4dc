"""The IDENTIFY document, parsed in one place: what a node sends comes back as it was, and
anything else is a ReplicationError that names the URL and what was wrong."""

from __future__ import annotations

from typing import Any

import pytest

from kvstore.replication.protocol import Identity, ReplicationError, parse_identity
from kvstore.replication.timelines import Switch

URL = "http://127.0.0.1:9"
GOOD: dict[str, Any] = {
    "system_identifier": "7310000000000000001",
    "timeline": 3,
    "role": "primary",
    "write_lsn": 4096,
    "history": [{"parent": 1, "switch_lsn": 100}, {"parent": 2, "switch_lsn": 2000}],
    "fenced": None,
}


def test_a_node_s_identity_goes_through_its_document_unchanged() -> None:
    identity = Identity(2**63 + 5, 3, "replica", 4096, (Switch(1, 100, 0), Switch(2, 2000, 0)), None)

    assert parse_identity(URL, identity.to_document()) == identity
    assert parse_identity(URL, GOOD).takes_writes
    assert not parse_identity(URL, GOOD | {"fenced": "fenced: peer is on timeline 4"}).takes_writes


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "expected a JSON object, got []"),
        ({}, "no 'system_identifier' in {}"),
        (GOOD | {"system_identifier": 7}, "system_identifier 7 is not a decimal string"),
        (GOOD | {"system_identifier": "-7"}, "system_identifier '-7' is not a decimal string"),
        (GOOD | {"timeline": 0}, "timeline 0 is not an integer >= 1"),
        (GOOD | {"timeline": "3"}, "timeline '3' is not an integer >= 1"),
        (GOOD | {"timeline": True}, "timeline True is not an integer >= 1"),
        (GOOD | {"write_lsn": -1}, "write_lsn -1 is not an integer >= 0"),
        (GOOD | {"role": "leader"}, "role 'leader' is not one of primary, replica"),
        (GOOD | {"fenced": 1}, "fenced 1 is neither null nor a reason"),
        (GOOD | {"history": {}}, "history {} is not a list"),
        (GOOD | {"history": [{"parent": 1}]}, "no 'switch_lsn' in {'parent': 1}"),
        (GOOD | {"history": [7]}, "expected a JSON object, got 7"),
    ],
)
def test_anything_else_names_the_url_and_what_is_wrong(document: object, reason: str) -> None:
    with pytest.raises(ReplicationError) as raised:
        parse_identity(URL, document)

    assert str(raised.value) == (
        f"{URL} answered the identify request with something that is not a kvstored node: {reason}"
    )
