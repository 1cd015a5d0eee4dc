"""The Authenticator (node/auth.py) over a real catalog in an in-process engine: password
logins, login tokens, API keys, and what ends them. No node, no HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvstore.node import catalog, catalog_rules, signing_keys
from kvstore.node.audit import AuditLog
from kvstore.node.auth import Authenticator
from kvstore.node.auth_policy import AuthPolicy
from kvstore.node.catalog_store import CatalogStore
from kvstore.node.cluster_key import ClusterKey
from kvstore.node.engine import Engine
from kvstore.node.errors import Forbidden, TooManyRequests, Unauthorized
from kvstore.node.passwords import HashingPool, HashParameters, Passwords
from kvstore.node.writes import TxnOp, now_ms
from support.engine import engine_on_disk

ADMIN_PASSWORD = "admin-password-1"
ALICE_PASSWORD = "alice-password-1"
HERE = "127.0.0.1"
# Argon2 at its cheapest: every login here costs next to nothing.
CHEAP = AuthPolicy(password_hash_time_cost=1, password_hash_memory_kib=8, password_hash_parallelism=1)
CHEAP_HASHING = HashParameters(1, 8, 1)
APP_READER = {"name": "app-reader", "superuser": False, "grants": [{"actions": ["read"], "pattern": "app:*"}]}


@dataclass
class Node:
    """The catalog's engine and the authenticator reading it."""

    engine: Engine
    auth: Authenticator

    async def put(self, key: str, document: dict[str, Any]) -> None:
        await self.engine.put(key, catalog.encode(document))

    async def add_user(self, name: str, password: str, roles: list[str], **fields: Any) -> dict[str, Any]:
        user = {**catalog.user_document(name, Passwords(CHEAP_HASHING).hash(password), roles, now_ms()), **fields}
        await self.put(catalog.user_key(name), user)
        return user

    async def add_api_key(
        self, user: dict[str, Any], cidrs: list[str] | None = None, expires_at: int | None = None
    ) -> str:
        document, token = catalog_rules.mint_api_key("key", user, cidrs or [], expires_at, now_ms())
        await self.put(catalog.apikey_key(document["id"]), document)
        return token

    async def bearer_of(self, name: str, password: str, address: str = HERE) -> str:
        token, _ = await self.auth.login(name, password, address)
        return f"Bearer {token}"


@asynccontextmanager
async def started(tmp_path: Path, policy: AuthPolicy) -> AsyncIterator[Node]:
    """A bootstrapped catalog (the superuser, signing keys, host rules, `policy`), as initdb writes it."""
    sealer = ClusterKey(bytes(range(32)))
    async with engine_on_disk(tmp_path) as engine:
        engine.store.watch(catalog.SYS_PREFIX, lambda key, entry: None)  # the caches follow its epoch
        documents = catalog.bootstrap_documents(
            Passwords(CHEAP_HASHING).hash(ADMIN_PASSWORD),
            signing_keys.initial_document(sealer, now_ms()),
            now_ms(),
            policy,
        )
        await engine.txn([TxnOp("set", key, value) for key, value in documents])
        audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=1 << 20, keep=1)
        hashing = HashingPool(threads=1, queue_max=4)
        try:
            yield Node(engine, Authenticator(CatalogStore(engine, 100), policy, audit, sealer, hashing))
        finally:
            hashing.close()
            audit.close()


def run(tmp_path: Path, body: Callable[[Node], Awaitable[None]], policy: AuthPolicy = CHEAP) -> None:
    async def main() -> None:
        async with started(tmp_path, policy) as node:
            await body(node)

    asyncio.run(main())


def refusal(call: Callable[[], object], kind: type[Exception] = Unauthorized) -> str:
    with pytest.raises(kind) as refused:
        call()
    return str(refused.value)


async def login_refusal(node: Node, name: str, password: str, address: str = HERE) -> Exception:
    try:
        await node.auth.login(name, password, address)
    except (Unauthorized, Forbidden, TooManyRequests) as error:
        return error
    raise AssertionError(f"{name} logged in")


def test_a_password_login_gives_a_token_that_authenticates_the_user(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        token, expires_at = await node.auth.login("admin", ADMIN_PASSWORD, HERE)
        assert abs(expires_at - (time.time() + CHEAP.token_ttl_s)) < 5
        admin = node.auth.authenticate(f"Bearer {token}", HERE)
        assert (admin.name, admin.superuser) == ("admin", True)
        assert node.auth.authenticate(f"bearer  {token} ", HERE) == admin  # the scheme in any case, spaces

    run(tmp_path, body)


def test_a_wrong_password_and_an_unknown_user_get_the_same_refusal(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        wrong = await login_refusal(node, "admin", "not-the-password")
        unknown = await login_refusal(node, "nobody", ADMIN_PASSWORD)
        assert isinstance(wrong, Unauthorized) and isinstance(unknown, Unauthorized)
        assert str(wrong) == str(unknown) == "invalid username or password"

    run(tmp_path, body)


def test_the_authorization_header_must_be_a_bearer_token_this_cluster_signed(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        authenticate = node.auth.authenticate
        assert "missing Authorization header" in refusal(lambda: authenticate(None, HERE))
        assert (
            refusal(lambda: authenticate(f"Basic {ADMIN_PASSWORD}", HERE)) == "Authorization must be 'Bearer <token>'"
        )
        assert refusal(lambda: authenticate("Bearer ", HERE)) == "Authorization must be 'Bearer <token>'"
        refusal(lambda: authenticate("Bearer not.a.jwt", HERE))
        token = (await node.bearer_of("admin", ADMIN_PASSWORD)).removeprefix("Bearer ")
        header, claims, signature = token.split(".")
        forged = f"{header}.{claims}.{signature[::-1]}"
        refusal(lambda: authenticate(f"Bearer {forged}", HERE))

    run(tmp_path, body)


def test_grants_are_read_from_the_catalog_on_each_request_not_from_the_token(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        await node.put(catalog.role_key("app-reader"), APP_READER)
        await node.add_user("alice", ALICE_PASSWORD, ["app-reader"])
        bearer = await node.bearer_of("alice", ALICE_PASSWORD)
        alice = node.auth.authenticate(bearer, HERE)
        assert alice.can("read", "app:1") and not alice.can("write", "app:1")
        writer_grants = [{"actions": ["read", "write"], "pattern": "app:*"}]
        await node.put(catalog.role_key("app-reader"), {**APP_READER, "grants": writer_grants})
        assert node.auth.authenticate(bearer, HERE).can("write", "app:1")  # the same token

    run(tmp_path, body)


@pytest.mark.parametrize(
    "change",
    [{"locked_reason": "suspicious"}, {"can_login": False}, {"valid_until": 1}, {"token_generation": 2}],
)
def test_locking_or_a_new_token_generation_ends_a_users_tokens(tmp_path: Path, change: dict[str, Any]) -> None:
    async def body(node: Node) -> None:
        user = await node.add_user("alice", ALICE_PASSWORD, ["reader"])
        bearer = await node.bearer_of("alice", ALICE_PASSWORD)
        assert node.auth.authenticate(bearer, HERE).name == "alice"
        await node.put(catalog.user_key("alice"), {**user, **change})
        assert refusal(lambda: node.auth.authenticate(bearer, HERE)) == "token is no longer valid; log in again"
        if "token_generation" in change:  # not locked: a new login works, on the new generation
            assert node.auth.authenticate(await node.bearer_of("alice", ALICE_PASSWORD), HERE).token_generation == 2
        else:
            assert isinstance(await login_refusal(node, "alice", ALICE_PASSWORD), Unauthorized)

    run(tmp_path, body)


def test_an_api_key_authenticates_its_user_until_it_expires(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        user = await node.add_user("alice", ALICE_PASSWORD, ["writer"])
        key = await node.add_api_key(user)
        alice = node.auth.authenticate(f"Bearer {key}", "192.0.2.7")
        assert alice.name == "alice" and alice.can("write", "k")
        assert set(node.auth.key_last_used) == {key.split("_")[1]}
        wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        assert refusal(lambda: node.auth.authenticate(f"Bearer {wrong_secret}", HERE)) == "invalid API key"
        assert refusal(lambda: node.auth.authenticate("Bearer kv_nosuchkey_secret", HERE)) == "invalid API key"
        expired = await node.add_api_key(user, expires_at=int(time.time()) - 1)
        assert refusal(lambda: node.auth.authenticate(f"Bearer {expired}", HERE)) == "API key 'key' has expired"

    run(tmp_path, body)


def test_an_api_key_bound_to_networks_works_from_those_only(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        user = await node.add_user("alice", ALICE_PASSWORD, ["reader"])
        key = f"Bearer {await node.add_api_key(user, cidrs=['10.0.0.0/8', '::1/128'])}"
        assert node.auth.authenticate(key, "10.1.2.3").name == "alice"
        assert node.auth.authenticate(key, "::1").name == "alice"
        refused = refusal(lambda: node.auth.authenticate(key, "192.168.0.1"))
        assert refused == "this API key may not be used from this address"
        assert refusal(lambda: node.auth.authenticate(key, "not-an-address")) == refused

    run(tmp_path, body)


def test_an_api_key_does_not_pass_to_a_new_user_of_the_same_name(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        first = await node.add_user("alice", ALICE_PASSWORD, ["reader"])
        key = f"Bearer {await node.add_api_key(first)}"
        assert node.auth.authenticate(key, HERE).name == "alice"
        await node.engine.delete(catalog.user_key("alice"))
        assert refusal(lambda: node.auth.authenticate(key, HERE)) == "token is no longer valid; log in again"
        await node.add_user("alice", "another-password", ["admin"], created_at_ms=first["created_at_ms"] + 1)
        refused = refusal(lambda: node.auth.authenticate(key, HERE))
        assert refused == "this API key belonged to a deleted user of that name"

    run(tmp_path, body)


def test_failed_logins_lock_out_even_the_right_password(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        for _ in range(2):
            assert isinstance(await login_refusal(node, "admin", "a-guess"), Unauthorized)
        locked = await login_refusal(node, "admin", ADMIN_PASSWORD)
        assert isinstance(locked, TooManyRequests) and "too many failed logins" in str(locked)
        await node.auth.login("admin", ADMIN_PASSWORD, "127.0.0.2")  # another address: not locked
        node.auth.clear_lockout("admin")  # an administrator's unlock ends the user's lockouts only
        assert isinstance(await login_refusal(node, "admin", ADMIN_PASSWORD), TooManyRequests)

    run(tmp_path, body, dataclasses.replace(CHEAP, login_max_failures=2))


def test_host_rules_refuse_a_login_and_a_token_from_a_rejected_address(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        bearer = await node.bearer_of("admin", ADMIN_PASSWORD, "10.0.0.1")
        rules = [{"action": "reject", "cidr": "10.0.0.0/8"}, {"action": "allow", "cidr": "0.0.0.0/0"}]
        await node.put(catalog.HBA_KEY, {"rules": rules})
        refused = await login_refusal(node, "admin", ADMIN_PASSWORD, "10.0.0.1")
        assert isinstance(refused, Forbidden) and "may not connect from 10.0.0.1" in str(refused)
        assert "may not connect from 10.0.0.1" in refusal(lambda: node.auth.authenticate(bearer, "10.0.0.1"), Forbidden)
        assert node.auth.authenticate(bearer, "192.0.2.1").name == "admin"  # the token itself is fine

    run(tmp_path, body)
