"""`kvctl user`, `kvctl role`, `kvctl grant` and `kvctl revoke`: the parsing helpers
directly, bad usage without a node, and the commands end to end against a real node."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvstore.cli.commands.users import grant_text, parse_grant, parse_valid_until, split_names, user_fields, user_row
from kvstore.cli.output import utc_text
from support.harness import NodeProcess
from support.kvctl_runner import as_env, fails, kvctl, kvctl_json, kvctl_login, ok

PASSWORD = "alice-password-1"
NEW_PASSWORD = "alice-password-2"
YEAR_2100 = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())


# -- pure parts -----------------------------------------------------------------------------


def test_split_names_accepts_commas_and_repeats() -> None:
    assert split_names(["writer,reader", "admin"]) == ["writer", "reader", "admin"]
    assert split_names([" a , ,b", "a"]) == ["a", "b"]
    assert split_names([",", ""]) == []


def test_parse_grant_splits_at_the_first_colon() -> None:
    assert parse_grant("read,write:app:*") == {"actions": ["read", "write"], "pattern": "app:*"}
    assert parse_grant("admin:*") == {"actions": ["admin"], "pattern": "*"}
    assert grant_text(parse_grant("read, delete:a:b:c")) == "read,delete:a:b:c"
    for bad in ("read", "read:", ":app:*", ",:app:*"):
        with pytest.raises(ValueError, match="grant"):
            parse_grant(bad)


def test_parse_valid_until_takes_epoch_seconds_or_iso_8601() -> None:
    assert parse_valid_until("4102444800") == YEAR_2100
    assert parse_valid_until("2100-01-01") == YEAR_2100
    assert parse_valid_until("2100-01-01T00:00:00Z") == YEAR_2100
    assert parse_valid_until("2100-01-01T02:00:00+02:00") == YEAR_2100
    for bad in ("soon", "-5", "2100-13-01"):
        with pytest.raises(ValueError, match="neither epoch seconds nor an ISO 8601 time"):
            parse_valid_until(bad)


def test_user_row_and_fields_describe_a_user_document() -> None:
    user = {
        "name": "bob",
        "roles": ["writer", "reader"],
        "can_login": True,
        "locked_reason": "suspicious activity",
        "valid_until": YEAR_2100,
        "created_at_ms": 1_000_500,
    }
    assert user_row(user) == ("bob", "writer,reader", True, True, "2100-01-01T00:00:00Z")
    fields = dict(user_fields(user))
    assert fields["locked_reason"] == "suspicious activity" and fields["created_at"] == "1970-01-01T00:16:40Z"
    plain = {**user, "roles": [], "locked_reason": None, "valid_until": None}
    assert user_row(plain) == ("bob", "-", True, False, "never")
    assert utc_text(None) is None


def test_bad_usage_exits_2_without_a_node(config: Path) -> None:
    assert kvctl("user", "create", "a", config=config).returncode == 2  # no password source
    both = kvctl("user", "create", "a", "--password", "--password-stdin", config=config, stdin=b"x\n")
    assert both.returncode == 2
    assert kvctl("user", "create", "a", "--password-stdin", "--valid-until", "soon", config=config).returncode == 2
    assert kvctl("role", "create", "r", "--grant", "read", config=config).returncode == 2
    assert kvctl("grant", "--user", "a", "--role", ",", config=config).returncode == 2
    assert kvctl("revoke", "--role", "admin", config=config).returncode == 2  # --user is required


# -- against a node -------------------------------------------------------------------------


def test_user_lifecycle(node: NodeProcess, config: Path, tmp_path: Path) -> None:
    env = as_env(node)
    created = kvctl(
        "user", "create", "alice", "--password-stdin", "--role=writer", "--role", "reader,writer",
        "--valid-until", "2100-01-01", "--format", "json", config=config, env=env, stdin=f"{PASSWORD}\n".encode(),
    )  # fmt: skip
    assert PASSWORD not in ok(created)
    again = kvctl("user", "create", "alice", "--password-stdin", config=config, env=env, stdin=PASSWORD.encode())
    assert "already exists" in fails(again)

    listed = kvctl_json("user", "list", config=config, env=env)["users"]
    alice = next(user for user in listed if user["name"] == "alice")
    assert alice["roles"] == ["writer", "reader"] and alice["valid_until"] == YEAR_2100
    assert alice["locked_reason"] is None and "password" not in str(alice)
    assert kvctl_json("user", "show", "alice", config=config, env=env) == alice
    table = ok(kvctl("user", "list", config=config, env=env)).splitlines()
    assert table[0].split() == ["NAME", "ROLES", "LOGIN", "LOCKED", "VALID_UNTIL"]
    assert ["alice", "writer,reader", "yes", "no", "2100-01-01T00:00:00Z"] in [line.split() for line in table]

    # alice logs in with her own password, and is no superuser.
    alice_config = tmp_path / "alice" / "config.json"
    ok(kvctl_login(node, alice_config, "alice", PASSWORD))
    ok(kvctl("set", "alice:k", "v", config=alice_config))
    assert "superuser" in fails(kvctl("user", "list", config=alice_config))

    locked = kvctl_json("user", "lock", "alice", "--reason=suspicious activity", config=config, env=env)
    assert locked["locked_reason"] == "suspicious activity"
    shown = dict(
        line.split(None, 1) for line in ok(kvctl("user", "show", "alice", config=config, env=env)).splitlines()
    )
    assert shown["locked"] == "yes" and shown["locked_reason"] == "suspicious activity"
    fails(kvctl_login(node, alice_config, "alice", PASSWORD))
    assert kvctl_json("user", "unlock", "alice", config=config, env=env)["locked_reason"] is None
    ok(kvctl_login(node, alice_config, "alice", PASSWORD))

    assert kvctl_json("grant", "--user=alice", "--role=admin", config=config, env=env)["roles"] == [
        "writer", "reader", "admin",
    ]  # fmt: skip
    revoked = ok(kvctl("revoke", "--user=alice", "--role=admin", config=config, env=env))
    assert revoked == "revoked admin from alice; roles=writer,reader\n"
    assert "nosuchrole" in fails(kvctl("grant", "--user=alice", "--role=nosuchrole", config=config, env=env))

    changed = kvctl("user", "passwd", "alice", "--password-stdin", config=config, env=env, stdin=NEW_PASSWORD.encode())
    assert ok(changed) == "changed the password of alice\n"
    assert "invalid username or password" in fails(kvctl_login(node, alice_config, "alice", PASSWORD))
    ok(kvctl_login(node, alice_config, "alice", NEW_PASSWORD))

    assert ok(kvctl("user", "delete", "alice", config=config, env=env)) == "deleted user alice\n"
    assert "alice" in fails(kvctl("user", "show", "alice", config=config, env=env))


def test_password_prompts_read_a_stdin_that_is_no_terminal_without_warnings(
    node: NodeProcess, config: Path, tmp_path: Path
) -> None:
    env = as_env(node)

    created = kvctl("user", "create", "bob", "--password", "--role=reader", config=config, env=env, stdin=b"bob-pw-1\n")
    assert (ok(created), created.stderr) == ("created user bob roles=reader\n", "")
    changed = kvctl("user", "passwd", "bob", config=config, env=env, stdin=b"bob-pw-2\n")
    assert (ok(changed), changed.stderr) == ("changed the password of bob\n", "")
    bob_config = tmp_path / "bob" / "config.json"
    logged_in = kvctl(
        "login", "--url", node.url, "--user", "bob", "--format=json", config=bob_config, stdin=b"bob-pw-2"
    )
    assert json.loads(ok(logged_in))["user"] == "bob" and logged_in.stderr == ""
    nothing = fails(kvctl("user", "passwd", "bob", config=config, env=env))  # stdin is /dev/null
    assert nothing == "kvctl: no password on stdin (when stdin is not a terminal, its first line is the password)"
    assert "alice" in fails(kvctl("user", "delete", "alice", config=config, env=env))


def test_role_lifecycle(node: NodeProcess, config: Path) -> None:
    env = as_env(node)
    role = kvctl_json(
        "role", "create", "app-rw", "--grant", "read,write:app:*", "--grant", "read:pub:*", config=config, env=env
    )
    assert role == {
        "name": "app-rw",
        "superuser": False,
        "grants": [{"actions": ["read", "write"], "pattern": "app:*"}, {"actions": ["read"], "pattern": "pub:*"}],
    }
    assert "already exists" in fails(kvctl("role", "create", "app-rw", config=config, env=env))
    assert "actions" in fails(kvctl("role", "create", "bad", "--grant", "fly:app:*", config=config, env=env))
    assert kvctl_json("role", "create", "ops", "--superuser", config=config, env=env)["superuser"] is True

    assert kvctl_json("role", "show", "app-rw", config=config, env=env) == role
    shown = ok(kvctl("role", "show", "app-rw", config=config, env=env)).splitlines()
    assert [line.split() for line in shown] == [
        ["name", "app-rw"], ["superuser", "no"], ["grant", "read,write:app:*"], ["grant", "read:pub:*"],
    ]  # fmt: skip
    names = [item["name"] for item in kvctl_json("role", "list", config=config, env=env)["roles"]]
    assert {"admin", "writer", "reader", "replication", "app-rw", "ops"} <= set(names)
    table = [line.split() for line in ok(kvctl("role", "list", config=config, env=env)).splitlines()]
    assert table[0] == ["NAME", "SUPERUSER", "GRANTS"] and ["app-rw", "no", "read,write:app:*", "read:pub:*"] in table

    # A user of the role may write under app: and not elsewhere.
    ok(
        kvctl(
            "user",
            "create",
            "carol",
            "--password-stdin",
            "--role",
            "app-rw",
            config=config,
            env=env,
            stdin=b"carol-pw-1",
        )
    )
    carol_config = config.parent / "carol.json"
    ok(kvctl_login(node, carol_config, "carol", "carol-pw-1"))
    ok(kvctl("set", "app:1", "v", config=carol_config))
    fails(kvctl("set", "other:1", "v", config=carol_config))

    # Altered in place: carol's login goes on, with the role's new grants from her next command.
    granted = kvctl_json(
        "role", "grant", "app-rw", "--actions", "write,delete", "--pattern", "other:*", config=config, env=env
    )
    assert {"actions": ["write", "delete"], "pattern": "other:*"} in granted["grants"]
    ok(kvctl("set", "other:1", "v", config=carol_config))
    assert ok(
        kvctl("role", "revoke", "app-rw", "--actions", "write", "--pattern", "app:*", config=config, env=env)
    ).startswith("altered role app-rw grants=read:app:*")
    assert "may not write" in fails(kvctl("set", "app:2", "v", config=carol_config))
    assert "built in" in fails(
        kvctl("role", "grant", "reader", "--actions", "write", "--pattern", "*", config=config, env=env)
    )
    usage = kvctl("role", "grant", "app-rw", "--pattern", "x", config=config, env=env)
    assert usage.returncode == 2 and "--actions" in usage.stderr

    assert "built in" in fails(kvctl("role", "delete", "admin", config=config, env=env))
    assert kvctl_json("role", "delete", "ops", config=config, env=env) == {"role": "ops", "deleted": True}
    assert ok(kvctl("role", "delete", "app-rw", config=config, env=env)) == "deleted role app-rw\n"
    assert "app-rw" in fails(kvctl("role", "show", "app-rw", config=config, env=env))


def test_settings_get_and_set_change_the_auth_policy_for_the_cluster(node: NodeProcess, config: Path) -> None:
    env = as_env(node)
    shown = kvctl_json("settings", "get", config=config, env=env)
    assert shown["settings"]["token_ttl_s"] == 3600 and isinstance(shown["version"], int)
    assert ok(kvctl("settings", "get", "password_min_length", config=config, env=env)).split() == [
        "password_min_length",
        "8",
    ]
    changed = ok(kvctl("settings", "set", "password_min_length=12", "token_ttl_s=900", config=config, env=env))
    assert [line.split() for line in changed.splitlines()] == [["password_min_length", "12"], ["token_ttl_s", "900"]]
    assert kvctl_json("settings", "get", config=config, env=env)["settings"]["password_min_length"] == 12
    too_short = kvctl("user", "create", "shorty", "--password-stdin", config=config, env=env, stdin=b"eleven-char")
    assert "at least 12" in fails(too_short)
    assert "token_ttl_s" in fails(kvctl("settings", "set", "token_ttl_s=1", config=config, env=env))
    assert "no_such" in fails(kvctl("settings", "set", "no_such=1", config=config, env=env))
    for bad, why in (("token_ttl_s", "is not NAME=VALUE"), ("token_ttl_s=soon", "is not an integer")):
        usage = kvctl("settings", "set", bad, config=config, env=env)
        assert usage.returncode == 2 and why in usage.stderr, usage.stderr
