"""The catalog document checks, the auth policy and listing ranges, directly (pure: no node)."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from typing import Any

import pytest

from kvstore.node import auth_policy, catalog, catalog_documents, hba, listing, signing_keys
from kvstore.node.auth_policy import AuthPolicy
from kvstore.node.catalog_documents import DocumentError
from kvstore.node.cluster_key import ClusterKey
from kvstore.node.errors import BadRequest
from kvstore.node.store import Store

HASH = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"
USER = catalog.user_document("alice", HASH, ["reader"], 1_000)
ROLE = {"name": "app-rw", "superuser": False, "grants": [{"actions": ["read", "write"], "pattern": "app:*"}]}
APIKEY = {
    "id": "0123456789ab",
    "name": "k8s-prod-app-01",
    "user": "alice",
    "user_created_at_ms": 1_000,
    "cidrs": ["10.0.0.0/8"],
    "expires_at": None,
    "created_at_ms": 2_000,
    "secret_sha256": "a" * 64,
}


def parse(key: str, document: Any) -> dict[str, Any]:
    return catalog_documents.parse(key, json.dumps(document).encode())


def refused(key: str, document: Any, why: str) -> None:
    with pytest.raises(DocumentError, match=why):
        parse(key, document)


def test_what_initdb_writes_passes_its_own_checks() -> None:
    jwt_keys = signing_keys.initial_document(ClusterKey(bytes(32)), 1_000)
    documents = catalog.bootstrap_documents(HASH, jwt_keys, 1_000, AuthPolicy(), ("replicator", HASH))
    for key, value in documents:
        assert catalog_documents.parse(key, value) == json.loads(value)


def test_valid_documents_of_each_kind_pass() -> None:
    assert parse("_sys.users:alice", USER) == USER
    assert parse("_sys.roles:app-rw", ROLE) == ROLE
    assert parse("_sys.apikeys:0123456789ab", APIKEY) == APIKEY
    legacy_key = {k: v for k, v in APIKEY.items() if k != "user_created_at_ms"}
    assert parse("_sys.apikeys:0123456789ab", legacy_key) == legacy_key
    assert parse("_sys.settings:auth", {"token_ttl_s": 60}) == {"token_ttl_s": 60}


@pytest.mark.parametrize(
    ("key", "document", "why"),
    [
        ("_sys.users:alice", "garbage", "JSON object"),
        ("_sys.users:alice", {**USER, "name": "bob"}, "not the key's user name"),
        ("_sys.users:alice\n", {**USER, "name": "alice\n"}, "user name"),
        ("_sys.users:alice", {**USER, "password_hash": "plain"}, "argon2"),
        ("_sys.users:alice", {**USER, "roles": "reader"}, "roles"),
        ("_sys.users:alice", {**USER, "roles": ["bad role"]}, "role name"),
        ("_sys.users:alice", {**USER, "can_login": "yes"}, "can_login"),
        ("_sys.users:alice", {**USER, "token_generation": 0}, "token_generation"),
        ("_sys.users:alice", {**USER, "is_admin": True}, "unknown field"),
        ("_sys.users:alice", {k: v for k, v in USER.items() if k != "roles"}, "lacks field"),
        ("_sys.roles:app-rw", {**ROLE, "superuser": 1}, "superuser"),
        ("_sys.roles:app-rw", {**ROLE, "grants": [{"actions": ["fly"], "pattern": "*"}]}, "grant 0"),
        ("_sys.roles:app-rw", {**ROLE, "grants": [{"actions": ["read"], "pattern": ""}]}, "pattern"),
        ("_sys.apikeys:0123456789ab", {**APIKEY, "id": "other"}, "API key id"),
        ("_sys.apikeys:0123456789ab", {**APIKEY, "cidrs": [167772160]}, "networks"),
        ("_sys.apikeys:0123456789ab", {**APIKEY, "cidrs": ["nope"]}, "CIDR"),
        ("_sys.apikeys:0123456789ab", {**APIKEY, "secret_sha256": "A" * 64}, "hex"),
        ("_sys.settings:jwt_keys", [], "JSON object"),
        (
            "_sys.settings:jwt_keys",
            {"current": "a", "keys": {"b": {"secret": "s" * 48, "created_at_ms": 1}}},
            "current",
        ),
        ("_sys.settings:jwt_keys", {"current": "a", "keys": {"a": {"secret": "short", "created_at_ms": 1}}}, "secret"),
        ("_sys.settings:hba", {"rules": [{"action": "allow", "cidr": 5}]}, "rule 0"),
        ("_sys.settings:hba", {"rules": [], "extra": 1}, "unknown field"),
        ("_sys.settings:auth", {"token_ttl_s": 1}, "token_ttl_s"),
        ("_sys.settings:catalog", {"catalog_version": "1"}, "catalog_version"),
        ("_sys.settings:nonsense", {}, "not a setting"),
        ("_sys.elsewhere:x", {}, "not in a catalog"),
    ],
)
def test_each_kind_of_damage_is_named(key: str, document: Any, why: str) -> None:
    refused(key, document, why)


def test_invalid_json_is_named() -> None:
    with pytest.raises(DocumentError, match="not a JSON document"):
        catalog_documents.parse("_sys.settings:hba", b"not json")


def test_host_rules_refuse_a_number_as_a_network() -> None:
    with pytest.raises(hba.RuleError, match="cidr 5"):
        hba.parse_rules([{"action": "allow", "cidr": 5}])


def test_the_auth_policy_checks_bounds_and_takes_integral_numbers() -> None:
    assert auth_policy.from_document({}) == AuthPolicy()
    assert auth_policy.from_document({"password_min_length": 12.0}).password_min_length == 12
    assert type(auth_policy.from_document({"password_min_length": 12.0}).password_min_length) is int
    for bad in ({"password_min_length": 12.5}, {"password_min_length": True}, {"token_ttl_s": 9}, {"x": 1}):
        with pytest.raises(auth_policy.PolicyError):
            auth_policy.from_document(bad)
    with pytest.raises(auth_policy.PolicyError, match="8 x password_hash_parallelism"):
        auth_policy.from_document({"password_hash_memory_kib": 8, "password_hash_parallelism": 2})
    changed = auth_policy.changed(AuthPolicy(), {"token_ttl_s": 60})
    assert changed == AuthPolicy(token_ttl_s=60)
    with pytest.raises(auth_policy.PolicyError, match="send an object"):
        auth_policy.changed(AuthPolicy(), {})


def test_a_listing_walks_only_the_ranges_the_read_grants_can_match() -> None:
    role = {
        "superuser": False,
        "grants": [
            {"actions": ["read"], "pattern": "app:*"},
            {"actions": ["read"], "pattern": "app:x:*"},  # inside app:, walked once
            {"actions": ["read"], "pattern": "pub[0-9]*"},
            {"actions": ["read"], "pattern": "_sys.*"},  # catalogs are never for non-superusers
        ],
    }
    writer = {"superuser": False, "grants": [{"actions": ["write"], "pattern": "*"}]}
    principal = catalog.resolve_principal({"name": "u", "roles": ["r", "w"]}, {"r": role, "w": writer})
    assert listing.read_ranges(principal, "") == ["app:", "pub"]
    assert listing.read_ranges(principal, "app:x:1") == ["app:x:1"]
    assert listing.read_ranges(principal, "other") == [] and listing.read_ranges(principal, "_sys.") == []
    admin = catalog.resolve_principal({"name": "a", "roles": ["admin"]}, {"admin": catalog.BUILTIN_ROLES["admin"]})
    assert listing.read_ranges(admin, "any") == ["any"]
    assert catalog.literal_head("app:[ab]*") == "app:" and catalog.literal_head("exact") == "exact"


def test_a_listing_stops_at_its_examined_bound_and_never_names_a_hidden_key() -> None:
    store = Store()
    hidden = [f"app:{n:05}:private" for n in range(50)]
    shown = ["app:99999:public"]
    store.bulk_load((key, (b"v", 1, 0, 0)) for key in [*hidden, *shown])
    visible = fnmatch_visible("app:*:public")
    page = listing.list_page(store, ["app:"], None, 10, 20, visible, now_ms=1)
    assert page.entries == [] and page.next_after is None and page.stopped_after == hidden[19]
    cursors = listing.ListingCursors(max_cursors=2)
    token = cursors.issue("u", "", page.stopped_after)
    assert token.startswith(listing.CURSOR_PREFIX) and "app:" not in token
    after = cursors.resolve(token, "u", "")
    pages = [listing.list_page(store, ["app:"], after, 10, 40, visible, now_ms=1)]
    assert [key for key, _ in pages[0].entries] == shown and pages[0].next_after is None
    with pytest.raises(BadRequest, match="unknown or expired"):
        cursors.resolve(token, "u", "")  # used once
    foreign = cursors.issue("u", "", "app:")
    with pytest.raises(BadRequest):
        cursors.resolve(foreign, "someone-else", "")
    assert cursors.resolve("app:1", "u", "") == "app:1"  # a plain key is a key


def fnmatch_visible(pattern: str) -> Callable[[str], bool]:
    return lambda key: fnmatch.fnmatchcase(key, pattern)
