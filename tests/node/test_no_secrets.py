"""No secret appears in any log, metric, status or error body (issue 10: a probe that held up,
kept as a test). A node with known passwords and a cluster key serves a user, an API key,
logins good and bad, refused and malformed requests, a base backup; then everything it
showed anyone is searched for every secret it was given or made."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt

from support.harness import ADMIN_PASSWORD, CLUSTER_KEY, MakeNode
from support.tokens import signing_secret

REPLICATION_PASSWORD = "replication-pw-4c1e9d"
USER_PASSWORD = "alice-pw-8b2f71"
WRONG_PASSWORD = "wrong-guess-d93a05"  # a failed login's password must not be logged either
REPLICATION_ENV = {"KVSTORE_REPLICATION_USER": "replicator", "KVSTORE_REPLICATION_PASSWORD": REPLICATION_PASSWORD}


def spellings(secret: str) -> Iterator[str]:
    """The secret as given, and the ways it may be encoded on its way to a log."""
    yield secret
    raw = secret.encode()
    yield base64.b64encode(raw).decode().rstrip("=")
    yield base64.urlsafe_b64encode(raw).decode().rstrip("=")
    if len(secret) == 64:  # a hex key: its bytes in base64 too
        key = bytes.fromhex(secret)
        yield base64.b64encode(key).decode().rstrip("=")
        yield base64.urlsafe_b64encode(key).decode().rstrip("=")


def files_text(root: Path) -> str:
    return "\n".join(path.read_text(errors="replace") for path in sorted(root.rglob("*.jsonl*")) if path.is_file())


def test_no_secret_in_logs_metrics_status_or_error_bodies(node_factory: MakeNode) -> None:
    node = node_factory("p", env=REPLICATION_ENV, args=["--name", "p"]).start()
    shown: list[str] = []  # every body, header and log the node produced for anyone
    url = node.url

    def seen(response: httpx.Response) -> httpx.Response:
        shown.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    with node.client() as admin, httpx.Client(base_url=url, timeout=30) as anonymous:
        created = seen(admin.post("/v1/admin/users", json={"name": "alice", "password": USER_PASSWORD, "roles": []}))
        assert created.status_code == 201, created.text
        made = admin.post("/v1/admin/apikeys", json={"name": "k1", "user": "alice", "cidrs": [], "expires_at": None})
        assert made.status_code == 201, made.text
        api_key = made.json()["token"]  # the one answer meant to carry a secret: not searched
        login = anonymous.post("/v1/auth/login", json={"username": "alice", "password": USER_PASSWORD})
        user_token = login.json()["token"]
        for username in ("alice", "admin", "nobody", "replicator"):
            seen(anonymous.post("/v1/auth/login", json={"username": username, "password": WRONG_PASSWORD}))
        seen(anonymous.post("/v1/auth/login", content=f'{{"username": "alice", "password": "{WRONG_PASSWORD}"'))
        for authorization in (f"Bearer {api_key}x", f"Bearer {user_token}x", f"Basic {WRONG_PASSWORD}"):
            seen(anonymous.get("/v1/kv/x", headers={"authorization": authorization}))
        as_alice = {"authorization": f"Bearer {user_token}"}
        seen(anonymous.get("/v1/kv/_sys.settings:jwt_keys", headers=as_alice))  # 403
        seen(anonymous.get("/v1/kv/app:x", headers={"authorization": f"Bearer {api_key}"}))  # 403
        seen(anonymous.get("/v1/admin/jwt-keys", headers=as_alice))
        seen(admin.get("/v1/admin/jwt-keys"))
        seen(admin.get("/v1/kv/_sys.settings:jwt_keys"))  # a raw read shows the sealed form only
        seen(admin.post("/v1/admin/jwt-keys/rotate"))
        seen(admin.get("/v1/admin/users"))
        seen(admin.get("/v1/admin/apikeys"))
        seen(admin.get("/v1/admin/settings/auth"))
        seen(admin.patch("/v1/admin/users/alice", json={"password": "short"}))  # refused: too short
        seen(admin.post("/v1/admin/rejoin", json={"primary": f"http://replicator:{REPLICATION_PASSWORD}@127.0.0.1:1"}))
        seen(admin.post("/v1/admin/rejoin", json={"primary": "http://127.0.0.1:1"}))
        seen(admin.get("/v1/status"))
        seen(anonymous.get("/metrics"))
        seen(anonymous.get("/v1/replication/system"))
        seen(anonymous.get("/health"))
        seen(admin.put("/v1/kv/" + "k" * 5000, content=b"x"))  # a refusal naming a limit
        replicator = anonymous.post("/v1/auth/login", json={"username": "replicator", "password": REPLICATION_PASSWORD})
        seen(
            anonymous.get("/v1/replication/identify", headers={"authorization": f"Bearer {replicator.json()['token']}"})
        )
        admin_token = node.token()
        kid = jwt.get_unverified_header(admin_token)["kid"]
        signing = signing_secret(node, kid)
    node.stop()  # every log line is out once the process has exited
    shown += [node.log(), files_text(node.data_dir / "log")]
    everything = "\n".join(shown)
    assert "login_failed" in everything  # the audit log was read: it records the failures

    secrets = {
        "admin password": ADMIN_PASSWORD,
        "replication password": REPLICATION_PASSWORD,
        "user password": USER_PASSWORD,
        "a wrong password": WRONG_PASSWORD,
        "API key": api_key,
        "API key secret": api_key.removeprefix("kv_").partition("_")[2],  # kv_<id>_<secret>
        "user token": user_token,
        "admin token": admin_token,
        "JWT signing secret": signing,
        "cluster key": CLUSTER_KEY,
    }
    leaks = [name for name, secret in secrets.items() for spelling in spellings(secret) if spelling in everything]
    assert leaks == []
