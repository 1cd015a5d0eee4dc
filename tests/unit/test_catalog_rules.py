"""The catalog's rules (node/catalog_rules.py), in process: no node, no store."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from kvstore.node import catalog, catalog_documents, catalog_rules
from kvstore.node.catalog_rules import API_KEY_PREFIX, NO_EXPIRY_S

NOW_MS = 1_700_000_000_000


def _user(name: str = "app", **fields: Any) -> dict[str, Any]:
    return {**catalog.user_document(name, "$argon2id$v=19$m=8,t=1,p=1$x$y", ["reader"], NOW_MS), **fields}


# -- token generations -----------------------------------------------------------------


def test_a_fresh_generation_is_above_every_revision_so_far() -> None:
    assert catalog_rules.fresh_generation(0) == 1
    assert catalog_rules.fresh_generation(41) == 42


@pytest.mark.parametrize("field", catalog_rules.SESSION_FIELDS)
def test_changing_a_session_field_ends_the_users_sessions(field: str) -> None:
    current = _user(valid_until=None)
    assert catalog_rules.ends_sessions(current, {**current, field: "changed"})


def test_a_grant_or_an_unchanged_user_keeps_the_sessions() -> None:
    current = _user()
    assert not catalog_rules.ends_sessions(current, current)
    assert not catalog_rules.ends_sessions(current, {**current, "roles": ["reader", "writer"]})


def test_a_user_with_no_usable_document_before_ends_any_sessions() -> None:
    assert catalog_rules.ends_sessions(None, _user())


@pytest.mark.parametrize(
    ("fields", "allowed"),
    [
        ({}, True),
        ({"can_login": False}, False),
        ({"locked_reason": "left the company"}, False),
        ({"valid_until": 101}, True),
        ({"valid_until": 100}, False),
    ],
)
def test_who_may_log_in(fields: dict[str, Any], allowed: bool) -> None:
    assert catalog_rules.may_log_in(_user(**fields), now_s=100) is allowed


# -- the role cascade ------------------------------------------------------------------


def test_dropping_a_role_drops_its_memberships_only() -> None:
    holder = _user("a", roles=["reader", "app-rw", "writer"])
    other = _user("b", roles=["reader"])
    changed = catalog_rules.without_role([(7, holder), (8, other)], "app-rw")
    assert changed == [(7, {**holder, "roles": ["reader", "writer"]})]
    assert holder["roles"] == ["reader", "app-rw", "writer"]  # the document read is left as it was


def test_dropping_a_role_nobody_holds_changes_no_user() -> None:
    assert catalog_rules.without_role([(1, _user())], "app-rw") == []


# -- API keys --------------------------------------------------------------------------


def test_a_minted_key_parses_back_and_only_its_secret_matches() -> None:
    document, token = catalog_rules.mint_api_key("ci", _user(), ["10.0.0.0/8"], None, NOW_MS)
    assert catalog_rules.is_api_key(token) and token.startswith(API_KEY_PREFIX)
    parsed = catalog_rules.parse_api_key(token)
    assert parsed is not None and parsed.key_id == document["id"]
    assert catalog_rules.secret_matches(document, parsed.secret)
    assert not catalog_rules.secret_matches(document, parsed.secret + "x")
    assert parsed.secret not in str(document)  # only its digest is stored


def test_a_minted_key_is_a_valid_catalog_document_of_that_incarnation() -> None:
    user = _user(created_at_ms=NOW_MS - 5)
    document, _ = catalog_rules.mint_api_key("ci", user, [], 1_800_000_000, NOW_MS)
    key = catalog.apikey_key(document["id"])
    assert catalog_documents.parse(key, catalog.encode(document)) == document
    assert document["user"] == "app" and document["created_at_ms"] == NOW_MS
    assert catalog_rules.key_incarnation(document) == (NOW_MS - 5, NOW_MS - 5)


def test_two_minted_keys_differ() -> None:
    first, second = (catalog_rules.mint_api_key("ci", _user(), [], None, NOW_MS) for _ in range(2))
    assert first[0]["id"] != second[0]["id"] and first[1] != second[1]


@pytest.mark.parametrize(
    ("token", "parsed"),
    [
        ("kv_abc123_s3cret", ("abc123", "s3cret")),
        ("kv_abc123_with_underscores", ("abc123", "with_underscores")),
        ("kv_abc123", ("abc123", "")),
        ("kv__secret", None),  # no id
        ("kv_ab-c_secret", None),  # an id of letters and digits only
        ("kv_../x_secret", None),
    ],
)
def test_parsing_an_api_key(token: str, parsed: tuple[str, str] | None) -> None:
    assert catalog_rules.parse_api_key(token) == parsed


def test_a_jwt_is_not_an_api_key() -> None:
    assert not catalog_rules.is_api_key("eyJhbGciOiJIUzI1NiJ9.e30.sig")


def test_the_secret_digest_is_sha256_hex() -> None:
    digest = catalog_rules.api_key_digest("s3cret")
    assert len(digest) == 64 and digest == digest.lower() and digest != catalog_rules.api_key_digest("s3cres")


def test_a_key_without_expiry_never_expires() -> None:
    assert catalog_rules.key_expires_at({"expires_at": None}) == NO_EXPIRY_S
    assert catalog_rules.key_expires_at({"expires_at": 1_800_000_000}) == 1_800_000_000


def test_an_older_key_belongs_to_a_user_made_before_it() -> None:
    assert catalog_rules.key_incarnation({"created_at_ms": NOW_MS}) == (0, NOW_MS)


def test_a_keys_networks_bound_where_it_may_be_used_from() -> None:
    networks = catalog_rules.key_networks({"cidrs": ["10.0.0.0/8", "::1/128"]})
    assert networks == (ip_network("10.0.0.0/8"), ip_network("::1/128"))
    assert catalog_rules.address_in("10.1.2.3", networks) and catalog_rules.address_in("::1", networks)
    assert not catalog_rules.address_in("192.168.0.1", networks)
    assert not catalog_rules.address_in("not an address", networks)
    assert catalog_rules.key_networks({}) == ()
