"""`kvctl apikey`: the parsing helpers directly, bad usage without a node, and the
commands end to end against a real node (create, use as a bearer token, list, revoke)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvstore.cli.commands.apikeys import APIKEY_TOKEN_WARNING, apikey_row, parse_cidr, parse_duration, parse_expires
from support.harness import NodeProcess
from support.kvctl_runner import as_env, fails, kvctl, kvctl_json, ok

YEAR_2100 = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
NOW = 1_700_000_000
DAY_S = 86400
USER_PASSWORD = b"user-password-1"


# -- pure parts -----------------------------------------------------------------------------


def test_parse_duration_takes_whole_units() -> None:
    assert parse_duration("30d") == 30 * DAY_S
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2w") == 14 * DAY_S
    assert parse_duration(" 45S ") == 45
    for bad in ("", "30", "d", "30x", "-5d", "1.5h", "30d 1h"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="not longer than 0"):
        parse_duration("0d")


def test_parse_expires_takes_a_duration_epoch_seconds_or_iso_8601() -> None:
    assert parse_expires("30d", NOW) == NOW + 30 * DAY_S
    assert parse_expires("12h", NOW + 0.9) == NOW + 12 * 3600
    assert parse_expires("4102444800", NOW) == YEAR_2100
    assert parse_expires("2100-01-01", NOW) == YEAR_2100
    assert parse_expires("2100-01-01T02:00:00+02:00", NOW) == YEAR_2100
    with pytest.raises(ValueError, match="not longer than 0"):
        parse_expires("0h", NOW)
    for bad in ("soon", "-5", "30x", "2100-13-01", ""):
        with pytest.raises(ValueError, match="neither epoch seconds, an ISO 8601 time nor a duration"):
            parse_expires(bad, NOW)


def test_parse_cidr_checks_the_network_and_keeps_the_text() -> None:
    assert parse_cidr("10.0.0.0/8") == "10.0.0.0/8"
    assert parse_cidr(" 10.1.2.3/8 ") == "10.1.2.3/8"  # host bits are the node's to normalize
    assert parse_cidr("127.0.0.1") == "127.0.0.1"
    assert parse_cidr("fd00::/8") == "fd00::/8"
    for bad in ("", "10.0.0.0/33", "10.0.0", "example.com/8"):
        with pytest.raises(ValueError, match="not a CIDR"):
            parse_cidr(bad)


def test_apikey_row_describes_a_listed_key() -> None:
    key = {
        "id": "a1b2c3",
        "name": "k8s-prod-app-01",
        "user": "alice",
        "cidrs": ["10.0.0.0/8", "192.168.0.0/16"],
        "expires_at": YEAR_2100,
        "created_at_ms": 1_000_500,
        "last_used_at": 1000,
    }
    assert apikey_row(key) == (
        "k8s-prod-app-01", "a1b2c3", "alice", "10.0.0.0/8,192.168.0.0/16", "2100-01-01T00:00:00Z",
        "1970-01-01T00:16:40Z",
    )  # fmt: skip
    plain = {**key, "cidrs": [], "expires_at": None, "last_used_at": None}
    assert apikey_row(plain)[3:] == ("-", "never", "never")


def test_bad_usage_exits_2_without_a_node(config: Path) -> None:
    assert kvctl("apikey", "create", "k", config=config).returncode == 2  # --user is required
    assert kvctl("apikey", "create", "k", "--user=a", "--cidr=10.0.0.0/33", config=config).returncode == 2
    assert kvctl("apikey", "create", "k", "--user=a", "--expires=soon", config=config).returncode == 2
    assert kvctl("apikey", "create", "k", "--user=a", "--expires=0d", config=config).returncode == 2
    assert kvctl("apikey", "revoke", config=config).returncode == 2  # NAME is required


# -- against a node -------------------------------------------------------------------------


def key_env(node: NodeProcess, token: str) -> dict[str, str]:
    return {"KVCTL_URL": node.url, "KVCTL_TOKEN": token}


def test_apikey_lifecycle(node: NodeProcess, config: Path) -> None:
    env = as_env(node)
    ok(
        kvctl(
            "user",
            "create",
            "alice",
            "--password-stdin",
            "--role",
            "writer",
            config=config,
            env=env,
            stdin=USER_PASSWORD,
        )
    )

    before = int(time.time())
    created = kvctl_json("apikey", "create", "k8s-prod-app-01", "--user=alice", "--expires=30d", config=config, env=env)
    token = created["token"]
    assert token.startswith(f"kv_{created['id']}_")
    assert created["name"] == "k8s-prod-app-01" and created["user"] == "alice" and created["cidrs"] == []
    assert before + 30 * DAY_S <= created["expires_at"] <= int(time.time()) + 30 * DAY_S
    assert "already exists" in fails(
        kvctl("apikey", "create", "k8s-prod-app-01", "--user=alice", config=config, env=env)
    )
    assert "unknown user" in fails(kvctl("apikey", "create", "k2", "--user=nobody", config=config, env=env))

    # The token works like a login token, as alice (a writer, no superuser).
    as_key = key_env(node, token)
    ok(kvctl("set", "app:1", "from-a-key", config=config, env=as_key))
    assert ok(kvctl("get", "app:1", config=config, env=as_key)) == "from-a-key"
    assert "superuser" in fails(kvctl("apikey", "list", config=config, env=as_key))

    listed = kvctl_json("apikey", "list", config=config, env=env)["apikeys"]
    assert [key["name"] for key in listed] == ["k8s-prod-app-01"]
    assert listed[0]["id"] == created["id"] and listed[0]["last_used_at"] is not None
    assert "token" not in listed[0] and token not in str(listed) and created["id"] in str(listed)
    table = ok(kvctl("apikey", "list", config=config, env=env))
    # The secret is base64url, so it may itself hold "_": split at the id, not at the last "_".
    assert token.split("_", 2)[2] not in table
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["NAME", "ID", "USER", "CIDRS", "EXPIRES", "LAST_USED"]
    assert rows[1][:4] == ["k8s-prod-app-01", created["id"], "alice", "-"]

    # The table form prints the token once, with the warning that it will not be shown again.
    shown = kvctl("apikey", "create", "ci-runner", "--user", "alice", config=config, env=env)
    lines = ok(shown).splitlines()
    assert lines[0].startswith("created API key ci-runner for alice (id ") and lines[0].endswith("expires never)")
    assert lines[1].startswith("kv_") and shown.stderr.strip() == APIKEY_TOKEN_WARNING
    assert ok(kvctl("get", "app:1", config=config, env=key_env(node, lines[1]))) == "from-a-key"

    assert (
        ok(kvctl("apikey", "revoke", "k8s-prod-app-01", config=config, env=env)) == "revoked API key k8s-prod-app-01\n"
    )
    assert "invalid API key" in fails(kvctl("get", "app:1", config=config, env=as_key))
    assert "k8s-prod-app-01" in fails(kvctl("apikey", "revoke", "k8s-prod-app-01", config=config, env=env))
    assert kvctl_json("apikey", "revoke", "ci-runner", config=config, env=env) == {
        "apikey": "ci-runner",
        "revoked": True,
    }
    assert kvctl_json("apikey", "list", config=config, env=env) == {"apikeys": []}

    expired = kvctl_json("apikey", "create", "old", "--user=alice", "--expires=2000-01-01", config=config, env=env)
    assert "expired" in fails(kvctl("get", "app:1", config=config, env=key_env(node, expired["token"])))


def test_apikey_bound_to_networks(node: NodeProcess, config: Path) -> None:
    env = as_env(node)
    ok(
        kvctl(
            "user", "create", "bob", "--password-stdin", "--role", "writer", config=config, env=env, stdin=USER_PASSWORD
        )
    )

    far = kvctl_json("apikey", "create", "far", "--user=bob", "--cidr=10.0.0.0/8", config=config, env=env)
    assert far["cidrs"] == ["10.0.0.0/8"]
    assert "address" in fails(kvctl("set", "net:1", "v", config=config, env=key_env(node, far["token"])))

    near = kvctl_json(
        "apikey", "create", "near", "--user=bob", "--cidr=10.0.0.0/8", "--cidr", "127.0.0.0/8", config=config, env=env
    )
    assert near["cidrs"] == ["10.0.0.0/8", "127.0.0.0/8"]
    ok(kvctl("set", "net:1", "v", config=config, env=key_env(node, near["token"])))
    table = [line.split() for line in ok(kvctl("apikey", "list", config=config, env=env)).splitlines()]
    assert ["far", far["id"], "bob", "10.0.0.0/8", "never", "never"] in table
