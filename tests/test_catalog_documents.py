"""The catalog document checks and the auth policy, directly (pure: no node)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kvstore.node import auth_policy, catalog, catalog_documents, hba
from kvstore.node.auth_policy import AuthPolicy
from kvstore.node.catalog_documents import DocumentError

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
    documents = catalog.bootstrap_documents(HASH, "kid", "s" * 48, 1_000, AuthPolicy(), ("replicator", HASH))
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


def test_a_listing_prefix_is_refused_only_when_no_read_grant_can_cover_it() -> None:
    role = {"superuser": False, "grants": [{"actions": ["read"], "pattern": "app:*"}]}
    writer = {"superuser": False, "grants": [{"actions": ["write"], "pattern": "*"}]}
    user = {"name": "u", "roles": ["r", "w"]}
    principal = catalog.resolve_principal(user, {"r": role, "w": writer})
    assert principal.may_read_under("") and principal.may_read_under("app") and principal.may_read_under("app:x")
    assert not principal.may_read_under("other") and not principal.may_read_under("_sys.")
    assert catalog.literal_head("app:[ab]*") == "app:" and catalog.literal_head("exact") == "exact"
