"""Who may do what (node/catalog.py): a principal's grants resolved from its roles, and
`Principal.can`, which every data request asks. In process: no node, no store."""

from __future__ import annotations

from typing import Any

import pytest

from kvstore.node.catalog import BUILTIN_ROLES, Grant, Principal, resolve_principal


def principal(*grants: tuple[list[str], str], superuser: bool = False) -> Principal:
    return Principal(
        name="app",
        superuser=superuser,
        roles=("app-role",),
        grants=tuple(Grant(frozenset(actions), pattern) for actions, pattern in grants),
        token_generation=1,
    )


def user(*roles: str) -> dict[str, Any]:
    return {"name": "app", "roles": list(roles), "token_generation": 4, "created_at_ms": 1234}


def test_a_grant_allows_its_actions_on_keys_its_pattern_matches_and_nothing_else() -> None:
    app_reader = principal((["read"], "app:*"))
    assert app_reader.can("read", "app:1") and app_reader.can("read", "app:")
    assert not app_reader.can("write", "app:1")  # another action
    assert not app_reader.can("read", "other:1")  # another key
    assert not app_reader.can("read", "xapp:1")  # the pattern is anchored at the start ...
    assert principal((["read"], "app:1")).can("read", "app:1")
    assert not principal((["read"], "app:1")).can("read", "app:10")  # ... and at the end


@pytest.mark.parametrize(
    ("pattern", "allowed", "refused"),
    [
        ("user:?", ["user:a", "user:7"], ["user:", "user:ab"]),
        ("[ab]*", ["a", "b:x"], ["c", "A"]),
        ("App:*", ["App:x"], ["app:x", "APP:x"]),  # case-sensitive
        ("*", ["anything", "", "a\nb"], []),
        ("a.b", ["a.b"], ["aXb"]),  # a dot is a dot, not a regex wildcard
    ],
)
def test_patterns_are_shell_style(pattern: str, allowed: list[str], refused: list[str]) -> None:
    holder = principal((["read"], pattern))
    assert [key for key in allowed if holder.can("read", key)] == allowed
    assert [key for key in refused if holder.can("read", key)] == []


def test_grants_add_up_per_action_across_patterns() -> None:
    holder = principal((["read"], "a:*"), (["read", "write"], "b:*"), (["delete"], "c:1"))
    assert [holder.can("read", key) for key in ("a:1", "b:1", "c:1")] == [True, True, False]
    assert [holder.can("write", key) for key in ("a:1", "b:1", "c:1")] == [False, True, False]
    assert [holder.can("delete", key) for key in ("a:1", "b:1", "c:1")] == [False, False, True]
    assert not holder.can("admin", "a:1")  # an action no grant names


def test_catalog_keys_are_for_superusers_only_whatever_the_grants() -> None:
    everything = principal((["read", "write", "delete", "admin"], "*"))
    assert everything.can("write", "app:1")
    assert not everything.can("read", "_sys.users:admin")
    assert not everything.can("write", "_sys.roles:writer")
    assert not principal((["read"], "_sys.*")).can("read", "_sys.settings:hba")
    superuser = principal(superuser=True)  # no grant at all
    assert superuser.can("read", "_sys.users:admin") and superuser.can("replication", "anything")


def test_has_action_is_about_the_action_only() -> None:
    replicator = principal((["replication"], "nothing-matches-this"))
    assert replicator.has_action("replication") and not replicator.has_action("read")


def test_resolve_principal_unites_the_users_roles() -> None:
    roles = {
        "reader": {"name": "reader", "grants": [{"actions": ["read"], "pattern": "*"}]},
        "app-rw": {"name": "app-rw", "grants": [{"actions": ["write", "delete"], "pattern": "app:*"}]},
    }
    resolved = resolve_principal(user("reader", "app-rw"), roles)
    assert (resolved.name, resolved.roles, resolved.superuser) == ("app", ("reader", "app-rw"), False)
    assert (resolved.token_generation, resolved.created_at_ms) == (4, 1234)
    assert resolved.can("read", "other:1") and not resolved.can("write", "other:1")
    assert resolved.can("write", "app:1") and resolved.can("delete", "app:1")


def test_a_dropped_role_grants_nothing_but_stays_named() -> None:
    resolved = resolve_principal(user("gone", "reader"), {"reader": {"name": "reader", **BUILTIN_ROLES["reader"]}})
    assert resolved.roles == ("gone", "reader")
    assert resolved.can("read", "k") and not resolved.can("write", "k")
    nothing = resolve_principal(user("gone"), {})
    assert not nothing.can("read", "k") and not nothing.superuser


def test_any_superuser_role_makes_a_superuser() -> None:
    roles = {name: {"name": name, **role} for name, role in BUILTIN_ROLES.items()}
    assert resolve_principal(user("reader", "admin"), roles).can("write", "_sys.users:x")
    assert not resolve_principal(user("reader", "writer", "replication"), roles).superuser
    # Defaults of an old user document: generation 1, created at 0.
    bare = resolve_principal({"name": "old"}, roles)
    assert (bare.roles, bare.token_generation, bare.created_at_ms) == ((), 1, 0)
