"""The replication role cannot become an admin (issue 10 item 3): the token signing secrets the
catalog replicates are sealed under the cluster key (node/cluster_key.py), which never travels
in a base backup or the WAL stream. Nodes given the key verify and issue tokens; a node given
another key, or none, refuses to start."""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from kvstore.node import cluster_key, signing_keys
from kvstore.node.cluster_key import ClusterKey
from support.harness import CLUSTER_KEY, MakeNode, NodeProcess
from support.replication import REPLICATION_CREDENTIALS

DOCUMENT_START = b'{"current":'
STREAM_READ_S = 30.0  # a generous bound: the stream sends what the WAL holds at once
EXIT_WAIT_S = 60.0


def replication_headers(node: NodeProcess) -> dict[str, str]:
    login = httpx.post(f"{node.url}/v1/auth/login", json={"username": "replicator", "password": "replicator-password"})
    assert login.status_code == 200, login.text
    return {"authorization": f"Bearer {login.json()['token']}"}


def signing_documents(raw: bytes) -> list[dict[str, Any]]:
    """Every `_sys.settings:jwt_keys` document in a base backup or WAL stream (values are stored as
    their JSON bytes, sorted keys, so each starts with {"current":)."""
    found, start = [], raw.find(DOCUMENT_START)
    decoder = json.JSONDecoder()
    while start >= 0:
        document, _ = decoder.raw_decode(raw[start:].decode("latin-1"))
        found.append(document)
        start = raw.find(DOCUMENT_START, start + 1)
    return found


def byte_strings(value: Any) -> Iterator[bytes]:
    """Every string in a document, as text and (where it is base64 or hex) decoded, with the
    decoded bytes' tails past a 12-byte nonce: whatever an attacker might try as the secret."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from byte_strings(key)
            yield from byte_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from byte_strings(item)
    elif isinstance(value, str):
        yield value.encode()
        for decode in (base64.urlsafe_b64decode, base64.b64decode, bytes.fromhex):
            try:
                decoded = decode(value)  # type: ignore[operator]
            except (binascii.Error, ValueError):
                continue
            yield decoded
            yield decoded[12:]
            yield decoded[12:-16]


def forged_admin_token(secret: bytes, kid: str) -> str:
    now = int(time.time())
    claims = {"sub": "admin", "gen": 1, "iat": now, "exp": now + 600}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})


def wait_for_exit(node: NodeProcess) -> int:
    assert node.process is not None
    return node.process.wait(EXIT_WAIT_S)


@pytest.fixture
def primary(node_factory: MakeNode) -> NodeProcess:
    return node_factory("p", env=REPLICATION_CREDENTIALS, args=["--name", "p"]).start()


# Short candidates (a kid, a nonce) make PyJWT warn about weak HMAC keys: trying them is the point.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_a_replication_user_finds_no_usable_signing_secret(primary: NodeProcess) -> None:
    headers = replication_headers(primary)
    backup = httpx.get(f"{primary.url}/v1/replication/basebackup", params={"slot": "thief"}, headers=headers)
    assert backup.status_code == 200
    with primary.client() as admin:
        assert admin.post("/v1/admin/jwt-keys/rotate").status_code == 200  # a signing key in the WAL stream too
        raw_read = admin.get("/v1/kv/_sys.settings:jwt_keys")
    assert raw_read.status_code == 200
    params = {"from_lsn": backup.headers["x-kv-start-lsn"], "timeline": "1", "slot": "thief"}
    stream = b""
    deadline = time.monotonic() + STREAM_READ_S
    with httpx.stream("GET", f"{primary.url}/v1/replication/stream", params=params, headers=headers) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            stream += chunk
            if len(signing_documents(stream)) >= 2 or time.monotonic() > deadline:
                break  # the bootstrap's keys and the rotation's

    documents = signing_documents(backup.content) + signing_documents(stream) + [json.loads(raw_read.content)]
    assert len(documents) >= 3, "the base backup, the WAL stream and the raw read each hold the signing keys"
    kids = {kid for document in documents for kid in document["keys"]}
    candidates = {candidate for document in documents for candidate in byte_strings(document) if candidate}
    with httpx.Client(base_url=primary.url) as client:
        assert client.get("/v1/admin/jwt-keys", headers={"authorization": f"Bearer {primary.token()}"}).is_success
        for kid in kids:
            for candidate in candidates:
                forged = {"authorization": f"Bearer {forged_admin_token(candidate, kid)}"}
                assert client.get("/v1/admin/jwt-keys", headers=forged).status_code == 401, (kid, candidate)
    for document in documents:  # raw reads show the sealed form: no secret to anyone
        for key in document["keys"].values():
            assert "secret" not in key and set(key) >= {"sealed", "created_at_ms"}


def test_a_replica_with_the_key_verifies_tokens_and_issues_them_once_promoted(
    primary: NodeProcess, node_factory: MakeNode
) -> None:
    replica = node_factory(
        "r1", env=REPLICATION_CREDENTIALS, args=["--name", "r1", "--replica-of", primary.url]
    ).start()
    token = {"authorization": f"Bearer {primary.token()}"}
    assert httpx.get(f"{replica.url}/v1/admin/jwt-keys", headers=token).status_code == 200
    promoted = httpx.post(f"{replica.url}/v1/admin/promote", headers=token, timeout=60)
    assert promoted.status_code == 200, promoted.text
    replica_token = {"authorization": f"Bearer {replica.token()}"}
    assert httpx.get(f"{replica.url}/v1/admin/jwt-keys", headers=replica_token).status_code == 200
    rotated = httpx.post(f"{replica.url}/v1/admin/jwt-keys/rotate", headers=replica_token)
    assert rotated.status_code == 200, rotated.text
    replica._token = None  # a token from the key the promoted node sealed itself
    assert httpx.get(
        f"{replica.url}/v1/admin/jwt-keys", headers={"authorization": f"Bearer {replica.token()}"}
    ).is_success


def test_a_replica_with_another_key_or_none_refuses_to_start(primary: NodeProcess, node_factory: MakeNode) -> None:
    args = ["--name", "r1", "--replica-of", primary.url]
    wrong = node_factory("wrong", env={**REPLICATION_CREDENTIALS, "KVSTORE_CLUSTER_KEY": "ab" * 32}, args=args)
    wrong.spawn()
    assert wait_for_exit(wrong) != 0
    assert "the cluster key does not open signing key" in wrong.log()
    assert "ab" * 32 not in wrong.log()

    none = node_factory("none", env={**REPLICATION_CREDENTIALS, "KVSTORE_CLUSTER_KEY": ""}, args=args)
    none.spawn()
    assert wait_for_exit(none) != 0
    assert "this node has no cluster key, and it is a replica" in none.log()


def test_a_key_file_others_may_read_is_refused_and_a_private_one_works(node_factory: MakeNode, tmp_path: Path) -> None:
    key_file = tmp_path / "cluster.key"
    key_file.write_text(CLUSTER_KEY + "\n")
    os.chmod(key_file, 0o644)
    env = {"KVSTORE_CLUSTER_KEY": "", "KVSTORE_CLUSTER_KEY_FILE": str(key_file)}
    node = node_factory("n", env=env)
    node.spawn()
    assert wait_for_exit(node) != 0
    assert f"chmod 600 {key_file}" in node.log()
    os.chmod(key_file, 0o600)
    node.start()
    assert httpx.get(f"{node.url}/v1/admin/jwt-keys", headers={"authorization": f"Bearer {node.token()}"}).is_success


def test_a_primary_without_a_key_makes_one_in_its_data_directory(node_factory: MakeNode) -> None:
    node = node_factory("n", env={"KVSTORE_CLUSTER_KEY": ""}).start()
    key_file = node.data_dir / "cluster.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    token = node.token()
    node.stop()
    node.restart()  # the same key again: the tokens it signed still verify
    assert httpx.get(f"{node.url}/v1/admin/jwt-keys", headers={"authorization": f"Bearer {token}"}).is_success
    assert key_file.read_text().strip() not in node.log()


def test_signing_keys_written_raw_are_stored_sealed_or_refused(node_factory: MakeNode) -> None:
    node = node_factory("n").start()
    secret = "an-old-style-secret-in-the-clear-0123456789"
    now_ms = int(time.time() * 1000)
    clear = {"current": "old", "keys": {"old": {"secret": secret, "created_at_ms": now_ms}}}
    with node.client() as admin:
        assert admin.put("/v1/kv/_sys.settings:jwt_keys", content=json.dumps(clear)).status_code == 200
    # The admin's token named a key that is gone now; the secret written is kept (sealed), so a
    # token signed with it, as an older node did, verifies.
    old_token = {"authorization": f"Bearer {forged_admin_token(secret.encode(), 'old')}"}
    with httpx.Client(base_url=node.url, headers=old_token, timeout=30) as admin:
        stored = json.loads(admin.get("/v1/kv/_sys.settings:jwt_keys").content)
        assert set(stored["keys"]["old"]) == {"sealed", "created_at_ms"} and secret not in json.dumps(stored)

        other = ClusterKey(bytes.fromhex("ab" * 32)).seal("k2", "a-secret-sealed-under-another-key-0123456789")
        foreign = {"current": "k2", "keys": {"k2": {"sealed": other, "created_at_ms": now_ms}}}
        refused = admin.put("/v1/kv/_sys.settings:jwt_keys", content=json.dumps(foreign))
        assert refused.status_code == 400 and "does not open signing key 'k2'" in refused.json()["error"]["message"]
        assert admin.get("/v1/admin/jwt-keys").json()["current"] == "old"


def test_a_cluster_key_rotation_reseals_the_secrets_and_keeps_tokens(node_factory: MakeNode) -> None:
    node = node_factory("n").start()
    token = {"authorization": f"Bearer {node.token()}"}
    new_key = "c3" * 32
    node.stop()
    node.extra_env |= {"KVSTORE_CLUSTER_KEY": new_key, "KVSTORE_CLUSTER_KEY_PREVIOUS": CLUSTER_KEY}
    node.restart()
    assert httpx.get(f"{node.url}/v1/admin/jwt-keys", headers=token).is_success

    new = ClusterKey(bytes.fromhex(new_key))

    def resealed() -> bool:
        with node.client() as admin:
            document = json.loads(admin.get("/v1/kv/_sys.settings:jwt_keys").content)
        return all(new.is_current(kid, key["sealed"]) for kid, key in document["keys"].items())

    deadline = time.monotonic() + 30
    while not resealed() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert resealed()
    node.stop()
    node.extra_env.pop("KVSTORE_CLUSTER_KEY_PREVIOUS")
    node.restart()  # the new key alone opens everything now
    assert httpx.get(f"{node.url}/v1/admin/jwt-keys", headers=token).is_success
    assert CLUSTER_KEY not in node.log() and new_key not in node.log()


def test_a_primary_whose_catalog_is_sealed_makes_no_new_key_and_refuses_to_start(node_factory: MakeNode) -> None:
    node = node_factory("n").start()  # the harness's key seals its signing secrets
    node.stop()
    node.extra_env["KVSTORE_CLUSTER_KEY"] = ""
    node.spawn()
    assert wait_for_exit(node) == 2
    assert "this node has no cluster key, and it is a replica or its catalog's signing secrets are sealed" in node.log()
    assert not (node.data_dir / "cluster.key").exists()


def test_a_key_is_32_bytes_in_hex_or_base64_and_a_bad_one_is_never_echoed() -> None:
    key = bytes(range(32))
    for text in (key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("=")):
        assert cluster_key.parse(f" {text}\n", "test") == key
    for bad in ("ab" * 31, "zz" * 32, base64.b64encode(bytes(31)).decode(), "secret-looking-text"):
        with pytest.raises(cluster_key.ClusterKeyError) as refused:
            cluster_key.parse(bad, "KVSTORE_CLUSTER_KEY")
        assert bad not in str(refused.value) and "openssl rand -hex 32" in str(refused.value)
    sealer = ClusterKey(key)
    sealed = sealer.seal("kid1", "the secret")
    assert sealer.open("kid1", sealed) == "the secret"
    with pytest.raises(cluster_key.ClusterKeyError):
        sealer.open("kid2", sealed)  # bound to its kid: it cannot be moved to another
    assert "the secret" not in repr(sealer) and key.hex() not in repr(sealer)


def test_reseal_seals_clear_secrets_and_moves_previous_ones_to_the_current_key() -> None:
    old, new = ClusterKey(bytes(32)), ClusterKey(bytes([1] * 32), previous=bytes(32))
    document = {
        "current": "b",
        "keys": {
            "a": {"secret": "a-clear-secret-from-an-older-catalog-0123", "created_at_ms": 1, "retired_at_ms": 2},
            "b": {"sealed": old.seal("b", "b-secret-sealed-under-the-previous-key-01"), "created_at_ms": 2},
        },
    }
    resealed = signing_keys.reseal(document, new)
    assert resealed is not None
    assert set(resealed["keys"]["a"]) == {"sealed", "created_at_ms", "retired_at_ms"}
    assert all(new.is_current(kid, key["sealed"]) for kid, key in resealed["keys"].items())
    assert signing_keys.open_secrets(resealed, ClusterKey(bytes([1] * 32))) == {
        "a": "a-clear-secret-from-an-older-catalog-0123",
        "b": "b-secret-sealed-under-the-previous-key-01",
    }
    assert signing_keys.reseal(resealed, new) is None  # nothing left to do
