"""`kvctl hba` and `kvctl jwt-key`: the pure helpers directly, bad usage without a node,
and the commands end to end against a real node: rules listed, added, removed and
replaced, a change made meanwhile refused, a lockout refused unless forced, signing
keys listed and rotated."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from kvstore.cli import kvctl as kvctl_module
from kvstore.cli.client import KvClient
from kvstore.cli.commands.security import (
    DROP_OLD_WARNING,
    hba_row,
    hiding_rule,
    jwt_key_row,
    parse_rules_file,
    rule_text,
)
from support.harness import NodeProcess
from support.kvctl_runner import as_env, fails, kvctl, kvctl_json, ok

ALLOW_ALL = [{"action": "allow", "cidr": "0.0.0.0/0"}, {"action": "allow", "cidr": "::/0"}]


def table(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()]


# -- pure parts -----------------------------------------------------------------------------


def test_parse_rules_file_takes_a_list_or_rules_with_a_version() -> None:
    assert parse_rules_file(json.dumps(ALLOW_ALL).encode()) == (ALLOW_ALL, None)
    assert parse_rules_file(json.dumps({"rules": ALLOW_ALL}).encode()) == (ALLOW_ALL, None)
    assert parse_rules_file(json.dumps({"rules": [], "version": 7}).encode()) == ([], 7)
    assert parse_rules_file(b'{"rules": [], "version": null}') == ([], None)
    with pytest.raises(ValueError, match="not JSON"):
        parse_rules_file(b"allow 0.0.0.0/0")
    for bad in (b'{"rulez": []}', b'{"rules": {}}', b'{"rules": [], "extra": 1}', b'"rules"'):
        with pytest.raises(ValueError, match="expected a list of host rules"):
            parse_rules_file(bad)
    for version in (b'"3"', b"true", b"1.5"):
        with pytest.raises(ValueError, match='"version" must be a whole number'):
            parse_rules_file(b'{"rules": [], "version": ' + version + b"}")


def test_hiding_rule_is_an_earlier_rule_matching_every_client_of_a_later_one() -> None:
    def rule(cidr: str, **names: str) -> dict[str, Any]:
        return {"action": "allow", "cidr": cidr, **names}

    assert hiding_rule([*ALLOW_ALL, rule("10.0.0.0/8")], 2) == 0
    assert hiding_rule([*ALLOW_ALL, rule("fd00::/8", user="bob")], 2) == 1
    assert hiding_rule([rule("10.0.0.0/8"), rule("0.0.0.0/0")], 1) is None  # broader than the earlier one
    assert hiding_rule([rule("::/0"), rule("10.0.0.0/8")], 1) is None  # another IP version
    assert hiding_rule([rule("10.0.0.0/8", user="bob"), rule("10.1.0.0/16", user="bob", role="app")], 1) == 0
    assert hiding_rule([rule("10.0.0.0/8", user="bob"), rule("10.1.0.0/16")], 1) is None  # other users too
    assert hiding_rule([rule("10.0.0.0/8", role="app"), rule("10.1.0.0/16", user="bob")], 1) is None  # bob may lack app


def test_rows_and_texts_describe_rules_and_keys() -> None:
    rule = {"action": "reject", "cidr": "10.0.0.0/8", "role": "app", "comment": "old VPN"}
    assert hba_row(3, rule) == (3, "reject", "10.0.0.0/8", "all", "app", "old VPN")
    assert hba_row(0, ALLOW_ALL[0]) == (0, "allow", "0.0.0.0/0", "all", "all", None)
    assert rule_text(rule) == "reject 10.0.0.0/8 user=all role=app"
    key = {"kid": "k1", "current": False, "created_at_ms": 1_000_500, "retired_at_ms": 2_000_000}
    assert jwt_key_row(key) == ("k1", False, "1970-01-01T00:16:40Z", "1970-01-01T00:33:20Z")
    assert jwt_key_row({"kid": "k2", "current": True, "created_at_ms": 0}) == ("k2", True, "1970-01-01T00:00:00Z", None)


def test_bad_usage_exits_2_without_a_node(config: Path) -> None:
    assert kvctl("hba", "add", "--action", "maybe", "--cidr", "10.0.0.0/8", config=config).returncode == 2
    both = kvctl("hba", "add", "--action=allow", "--cidr=10.0.0.0/8", "--user=a", "--role=b", config=config)
    assert both.returncode == 2 and "--user and --role exclude each other" in both.stderr


# -- against a node -------------------------------------------------------------------------


def test_hba_list_add_remove_set_and_a_lockout(node: NodeProcess, config: Path, tmp_path: Path) -> None:
    env = as_env(node)
    listed = table(ok(kvctl("hba", "list", config=config, env=env)))
    assert listed == [
        ["#", "ACTION", "CIDR", "USER", "ROLE", "COMMENT"],
        ["0", "allow", "0.0.0.0/0", "all", "all", "-"],
        ["1", "allow", "::/0", "all", "all", "-"],
    ]

    # Appended after the initial allow-all, a rule never decides: kvctl says so.
    added = kvctl(
        "hba", "add", "--action=reject", "--cidr=10.0.0.0/8", "--user=bob", "--comment=VPN", config=config, env=env
    )
    assert ok(added) == "added host rule 2: reject 10.0.0.0/8 user=bob role=all; version=2\n"
    assert added.stderr.startswith("kvctl: host rule 2 never decides: rule 0 (allow 0.0.0.0/0 user=all role=all)")
    first = kvctl_json(
        "hba", "add", "--action", "allow", "--cidr", "192.168.1.7", "--role", "writer", "--position", "0",
        config=config, env=env,
    )  # fmt: skip
    assert first == {
        "rules": [
            {"action": "allow", "cidr": "192.168.1.7/32", "role": "writer"},
            *ALLOW_ALL,
            {"action": "reject", "cidr": "10.0.0.0/8", "user": "bob", "comment": "VPN"},
        ],
        "version": 3,
    }
    assert kvctl_json("hba", "list", config=config, env=env) == first
    saved = tmp_path / "rules.json"
    saved.write_text(json.dumps(first))

    bad_cidr = kvctl("hba", "add", "--action=allow", "--cidr=10.0.0.0/33", config=config, env=env)
    assert fails(bad_cidr) == "kvctl: rule 4: cidr '10.0.0.0/33' is not a network such as 10.0.0.0/8"
    removed = ok(kvctl("hba", "remove", "3", config=config, env=env))
    assert removed == "removed host rule 3: reject 10.0.0.0/8 user=bob role=all; version=4\n"
    assert fails(kvctl("hba", "remove", "3", config=config, env=env)) == "kvctl: there is no host rule 3: there are 3"
    # The saved file names version 3; the rules moved on, so replacing them from it is refused.
    stale = kvctl("hba", "set", str(saved), config=config, env=env)
    assert fails(stale) == "kvctl: host rules are at version 4, not 3; read them again"

    reject_local = kvctl("hba", "add", "--action=reject", "--cidr=127.0.0.0/8", "--position=0", config=config, env=env)
    assert fails(reject_local) == (
        "kvctl: these rules would lock you ('admin') out from 127.0.0.1 (host rule 0 rejects); "
        "add a rule that allows you first, or use --force"
    )
    # Forced, and only if nothing changed since version 4, rules that lock the caller out are stored.
    admin_out = {"rules": [{"action": "reject", "cidr": "127.0.0.0/8", "user": "admin"}, *ALLOW_ALL], "version": 4}
    forced = kvctl(
        "hba", "set", "-", "--force", "--format=json", config=config, env=env, stdin=json.dumps(admin_out).encode()
    )
    assert json.loads(ok(forced)) == {"rules": admin_out["rules"], "version": 5}


def test_hba_change_refused_when_the_rules_changed_meanwhile(
    node: NodeProcess, config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone changes the rules between kvctl reading and writing them: kvctl's change is
    refused and theirs kept. In process, to slip the other change in between."""
    concurrent = {"rules": [{"action": "allow", "cidr": "127.0.0.0/8", "comment": "theirs"}]}
    read_rules = KvClient.get_hba

    def read_then_someone_writes(client: KvClient) -> dict[str, Any]:
        document = read_rules(client)
        with node.client() as other:
            assert other.put("/v1/admin/hba", json=concurrent).status_code == 200
        return document

    monkeypatch.setattr(KvClient, "get_hba", read_then_someone_writes)
    for name, value in {**as_env(node), "KVCTL_CONFIG": str(config)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["kvctl", "hba", "remove", "1"])

    with pytest.raises(SystemExit) as exited:
        kvctl_module.main()

    assert exited.value.code == 1
    assert capsys.readouterr().err == "kvctl: host rules are at version 2, not 1; read them again\n"
    with node.client() as admin:
        assert admin.get("/v1/admin/hba").json() == {**concurrent, "version": 2}


def test_jwt_key_list_and_rotate(node: NodeProcess, config: Path) -> None:
    env = as_env(node)
    first = kvctl_json("jwt-key", "list", config=config, env=env)
    [key] = first["keys"]
    assert key["kid"] == first["current"] and key["current"] is True and "secret" not in key
    listed = table(ok(kvctl("jwt-key", "list", config=config, env=env)))
    assert listed[0] == ["KID", "CURRENT", "CREATED", "RETIRED"]
    assert listed[1][:2] == [key["kid"], "yes"] and listed[1][3] == "-"

    rotated = ok(kvctl("jwt-key", "rotate", config=config, env=env))
    assert rotated.endswith("; tokens of 1 older key stay valid until they expire\n")
    second_kid = rotated.removeprefix("rotated to signing key ").split(";")[0]

    # The token kvctl uses was signed with the retired key: still valid, until --drop-old.
    dropped = kvctl("jwt-key", "rotate", "--drop-old", "--format=json", config=config, env=env)
    third = json.loads(ok(dropped))
    assert [item["kid"] for item in third["keys"]] == [third["current"]]
    assert third["current"] not in (key["kid"], second_kid) and len(second_kid) == len(key["kid"])
    assert dropped.stderr == DROP_OLD_WARNING + "\n"
    assert (
        fails(kvctl("jwt-key", "list", config=config, env=env))
        == "kvctl: invalid token: unknown signing key; check $KVCTL_TOKEN"
    )
