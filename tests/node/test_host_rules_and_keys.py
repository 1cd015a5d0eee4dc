"""Host rules (pg_hba), signing-key rotation and argon2 rehash, against real nodes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import jwt
import pytest

from kvstore.node import hba, signing_keys
from kvstore.node.cluster_key import ClusterKey
from support.harness import ADMIN_PASSWORD, CHEAP_HASHING, NodeProcess
from support.sessions import bearer, login

PASSWORD = "a-user-password"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("hba") / "node")
    try:
        node.start()
        with node.client() as admin:
            for name, role in (("wendy", "writer"), ("rex", "reader")):
                body = {"name": name, "password": PASSWORD, "roles": [role]}
                assert admin.post("/v1/admin/users", json=body).status_code == 201
        yield node
    finally:
        node.close()


def hashes_run(node: NodeProcess) -> float:
    """The node's count of password hashes and verifications (each one argon2's cost)."""
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("kvstore_login_hashes_total "))


def audit_events(node: NodeProcess) -> list[dict[str, object]]:
    lines = (node.data_dir / "log" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# -- pure parts ----------------------------------------------------------------------


def test_first_matching_rule_decides_and_no_match_rejects() -> None:
    rules = hba.parse_rules(
        [
            {"action": "allow", "cidr": "10.1.0.0/16", "user": "ops"},
            {"action": "reject", "cidr": "10.0.0.0/8", "role": "writer"},
            {"action": "allow", "cidr": "10.0.0.0/8"},
            {"action": "allow", "cidr": "fd00::/8", "role": "reader"},
        ]
    )
    assert hba.decide(rules, "10.1.2.3", "ops", ("writer",)) == hba.Decision(True, 0)
    assert hba.decide(rules, "10.2.2.3", "ops", ("writer",)) == hba.Decision(False, 1)
    assert hba.decide(rules, "10.2.2.3", "bob", ("reader",)) == hba.Decision(True, 2)
    assert hba.decide(rules, "::ffff:10.2.2.3", "bob", ()) == hba.Decision(True, 2)  # IPv4-mapped
    assert hba.decide(rules, "fd00::1", "bob", ("reader",)) == hba.Decision(True, 3)
    assert hba.decide(rules, "fd00::1", "bob", ()) == hba.Decision(False, None)
    assert hba.decide(rules, "192.168.0.1", "ops", ()) == hba.Decision(False, None)
    assert hba.decide(rules, "not-an-address", "ops", ()) == hba.Decision(False, None)
    assert hba.decide((), "10.0.0.1", "ops", ()) == hba.Decision(False, None)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"action": "allow"}, "must be a list"),
        ([{"action": "maybe", "cidr": "10.0.0.0/8"}], "rule 0: action"),
        ([{"action": "allow", "cidr": "10.0.0.0/8"}, {"action": "allow", "cidr": "10.0.0.0/33"}], "rule 1: cidr"),
        ([{"action": "allow", "cidr": "::/0", "host": "x"}], "rule 0: unknown field(s) host"),
        ([{"action": "allow", "cidr": "::/0", "user": ""}], "rule 0: user"),
        ([{"action": "allow", "cidr": "::/0"}] * (hba.MAX_RULES + 1), "at most"),
    ],
)
def test_bad_rules_are_refused_naming_the_rule(rules: object, message: str) -> None:
    with pytest.raises(hba.RuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hba.parse_rules(rules)


def test_rotation_retires_keys_and_drops_them_once_their_tokens_expired() -> None:
    sealer = ClusterKey(bytes(32))
    document = signing_keys.initial_document(sealer, now_ms=0)
    k1 = document["current"]
    once = signing_keys.rotate(document, now_ms=1_000, token_ttl_s=60, drop_old=False, sealer=sealer)
    assert once["current"] != k1 and once["keys"][k1]["retired_at_ms"] == 1_000
    still = signing_keys.rotate(once, now_ms=60_999, token_ttl_s=60, drop_old=False, sealer=sealer)
    assert k1 in still["keys"]  # a token signed at 999 ms may live until 60 999 ms
    later = signing_keys.rotate(still, now_ms=61_000, token_ttl_s=60, drop_old=False, sealer=sealer)
    assert k1 not in later["keys"] and once["current"] in later["keys"] and len(later["keys"]) == 3
    dropped = signing_keys.rotate(later, now_ms=61_001, token_ttl_s=60, drop_old=True, sealer=sealer)
    assert list(dropped["keys"]) == [dropped["current"]]
    public = json.dumps(signing_keys.public(later))
    assert "secret" not in public and "sealed" not in public


# -- host rules on a node --------------------------------------------------------------


def test_host_rules_are_checked_at_login_and_on_every_request(secured: NodeProcess) -> None:
    wendy_token = login(secured, "wendy", PASSWORD).json()["token"]
    rex_token = login(secured, "rex", PASSWORD).json()["token"]
    with secured.client() as admin:
        key = admin.post("/v1/admin/apikeys", json={"name": "wendy-key", "user": "wendy"}).json()["token"]
        current = admin.get("/v1/admin/hba")
        assert current.status_code == 200 and current.json()["rules"] == hba.DEFAULT_RULES
        version = current.json()["version"]
        rules = [
            {"action": "allow", "cidr": "127.0.0.0/8", "user": "admin", "comment": "operators on the box"},
            {"action": "reject", "cidr": "127.0.0.1/32", "role": "writer"},
            {"action": "allow", "cidr": "127.0.0.0/8"},
        ]
        assert (
            admin.put("/v1/admin/hba", json={"rules": rules}, headers={"if-match": f'"{version + 1000}"'}).status_code
            == 412
        )
        changed = admin.put("/v1/admin/hba", json={"rules": rules}, headers={"if-match": f'"{version}"'})
        assert changed.status_code == 200, changed.text
        assert changed.json()["rules"] == rules and changed.json()["version"] > version

        # The writer is refused from here, with or without a token already in hand, by any credential.
        for credential in (wendy_token, key):
            with bearer(secured, credential) as wendy:
                refused = wendy.get("/v1/kv/anything")
                assert refused.status_code == 403 and "host rule 1 rejects" in refused.json()["error"]["message"]
        # Host rules come before the password: one answer whatever the password, and no hash spent.
        hashes = hashes_run(secured)
        refused_login = login(secured, "wendy", PASSWORD)
        assert refused_login.status_code == 403 and "127.0.0.1" in refused_login.json()["error"]["message"]
        wrong = login(secured, "wendy", "a-wrong-password")
        assert (wrong.status_code, wrong.json()) == (403, refused_login.json())
        assert hashes_run(secured) == hashes
        with bearer(secured, rex_token) as rex:
            assert rex.get("/v1/kv/anything").status_code == 404  # allowed by rule 2; the key is absent

        # No matching rule rejects; the change takes effect on the next request.
        only_admin = [rules[0]]
        assert admin.put("/v1/admin/hba", json={"rules": only_admin}).status_code == 200
        with bearer(secured, rex_token) as rex:
            message = rex.get("/v1/kv/anything").json()["error"]["message"]
            assert "no host rule matches" in message

        # An admin cannot lock itself out by accident.
        outside = [{"action": "allow", "cidr": "10.0.0.0/8"}]
        lockout = admin.put("/v1/admin/hba", json={"rules": outside})
        assert lockout.status_code == 400 and "lock you" in lockout.json()["error"]["message"]
        bad = admin.put("/v1/admin/hba", json={"rules": [{"action": "allow", "cidr": "nowhere"}]})
        assert bad.status_code == 400 and "rule 0: cidr" in bad.json()["error"]["message"]
        assert admin.get("/v1/admin/hba").json()["rules"] == only_admin

    secured.kill()  # the rules are catalog data: they survive a SIGKILL
    secured.restart()
    with bearer(secured, rex_token) as rex:
        assert rex.get("/v1/kv/anything").status_code == 403
    with secured.client() as admin:
        assert admin.get("/v1/admin/hba").json()["rules"] == only_admin
        assert admin.put("/v1/admin/hba", json={"rules": hba.DEFAULT_RULES}).status_code == 200
    with bearer(secured, rex_token) as rex:
        assert rex.get("/v1/kv/anything").status_code == 404
    events = [event["event"] for event in audit_events(secured)]
    assert events.count("hba_changed") == 3 and "login_rejected" in events


def test_non_superusers_cannot_see_or_change_host_rules_or_keys(secured: NodeProcess) -> None:
    with bearer(secured, login(secured, "rex", PASSWORD).json()["token"]) as rex:
        assert rex.get("/v1/admin/hba").status_code == 403
        assert rex.put("/v1/admin/hba", json={"rules": hba.DEFAULT_RULES}).status_code == 403
        assert rex.get("/v1/admin/jwt-keys").status_code == 403
        assert rex.post("/v1/admin/jwt-keys/rotate").status_code == 403
        assert rex.get("/v1/kv/_sys.settings:hba").status_code == 403


# -- signing keys ----------------------------------------------------------------------


def test_rotation_keeps_old_tokens_until_a_drop(secured: NodeProcess) -> None:
    before = login(secured, "rex", PASSWORD).json()["token"]
    with secured.client() as admin:
        rotated = admin.post("/v1/admin/jwt-keys/rotate")
        assert rotated.status_code == 200, rotated.text
        assert "secret" not in rotated.text
        keys = rotated.json()["keys"]
        assert keys[0]["current"] and keys[0]["kid"] == rotated.json()["current"]
        assert jwt.get_unverified_header(before)["kid"] in {key["kid"] for key in keys[1:]}
    after = login(secured, "rex", PASSWORD).json()["token"]
    assert jwt.get_unverified_header(after)["kid"] == rotated.json()["current"]
    for token in (before, after):
        with bearer(secured, token) as rex:
            assert rex.get("/v1/status").status_code == 200  # both keys verify

    admin_token = secured.token()
    with bearer(secured, admin_token) as admin:
        emergency = admin.post("/v1/admin/jwt-keys/rotate", json={"drop_old": True})
        assert emergency.status_code == 200 and len(emergency.json()["keys"]) == 1
    for token in (before, after, admin_token):
        with bearer(secured, token) as stale:
            assert stale.get("/v1/status").status_code == 401
    fresh = login(secured, "rex", PASSWORD).json()["token"]
    with bearer(secured, fresh) as rex:
        assert rex.get("/v1/status").status_code == 200
    rotations = [event for event in audit_events(secured) if event["event"] == "jwt_key_rotated"]
    assert len(rotations) == 2 and rotations[1]["dropped"] and rotations[1]["by"] == "admin"


# -- argon2 parameters ------------------------------------------------------------------


def test_login_rehashes_a_password_made_with_other_parameters(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(env=dict(CHEAP_HASHING)).start()

    def stored_hash() -> str:
        with node.client() as admin:
            return str(json.loads(admin.get("/v1/kv/_sys.users:admin").content)["password_hash"])

    assert "m=8192,t=1,p=1" in stored_hash()
    token = node.token()
    with bearer(node, token) as admin:  # the cluster's policy, in the catalog: no restart needed
        stronger = {"password_hash_time_cost": 2, "password_hash_memory_kib": 16384, "password_hash_parallelism": 2}
        changed = admin.patch("/v1/admin/settings/auth", json=stronger)
        assert changed.status_code == 200, changed.text
        assert admin.get("/v1/status").status_code == 200  # the old token still works
    assert login(node, "admin", ADMIN_PASSWORD).status_code == 200  # this login rehashes
    rehashed = stored_hash()
    assert "m=16384,t=2,p=2" in rehashed
    assert login(node, "admin", ADMIN_PASSWORD).status_code == 200
    assert stored_hash() == rehashed  # once only
    with bearer(node, token) as admin:
        assert admin.get("/v1/status").status_code == 200  # same password: tokens stay valid
    events = [event["event"] for event in audit_events(node)]
    assert events.count("password_rehashed") == 1
    assert ADMIN_PASSWORD not in (node.data_dir / "log" / "audit.jsonl").read_text() + node.log()
