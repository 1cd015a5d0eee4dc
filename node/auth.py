"""Authentication: passwords, JWT login tokens, API keys, host rules: who a request is.

Passwords are verified in the hashing pool (passwords.py: argon2 takes ~100 ms, must never
run on the event loop, and its queue is bounded); a login is checked against the host
rules first and reserves its throttle attempt before any hash (throttle.py), so neither a
rejected address nor a throttled guess costs a hash. Verified tokens are cached, so the
request path pays a dict lookup instead of an HMAC (~27 us). A token (tokens.py) names its
signing key and the user's `token_generation`; bumping the generation (password change,
lock, delete) invalidates every token the user holds on its next use. An API key's format
and its rules are catalog_rules.py's. Privileges are not in the token: they are
resolved from the catalog (cached until it changes), so a grant or revoke works on the
next request with the same token. Host rules are checked at login and on every request
(an API key or token may travel); their decisions are cached per (address, user) until
the catalog changes. The policy (token lifetime, lockout, argon2 parameters) is the
catalog's `_sys.settings:auth` (auth_policy.py), read again whenever the catalog changes.

Catalog documents are checked as they are read (catalog_documents.py): a damaged user is
refused, a damaged role grants nothing, a damaged API key authenticates no one, and a
damaged settings document (signing keys, host rules, policy) leaves the last good one in
force, so no single bad document takes the node down.
"""

from __future__ import annotations

import logging
import secrets
import time
from ipaddress import IPv4Network, IPv6Network
from math import ceil
from typing import Any, Final

from . import auth_policy, catalog, catalog_rules, hba, metrics
from .audit import AuditLog
from .auth_policy import AuthPolicy
from .catalog_documents import DocumentError
from .catalog_store import CatalogStore
from .cluster_key import ClusterKey
from .errors import Forbidden, KvError, TooManyRequests, Unauthorized
from .passwords import HashingBusy, HashingPool, HashParameters, Passwords
from .throttle import Attempt, LoginThrottle, ThrottlePolicy, describe
from .tokens import Tokens

log = logging.getLogger(__name__)

TOKEN_CACHE_MAX: Final = 10_000
HOST_DECISIONS_MAX: Final = 10_000
_BAD_CREDENTIALS: Final = "invalid username or password"
# How long a login refused because the hashing pool is full should wait: about one hash.
HASHING_BUSY_RETRY_S: Final = 1
# Until a valid host rule set was ever read, a broken one admits loopback clients only,
# so an administrator on the machine can repair it.
_LOOPBACK_ONLY: Final = hba.parse_rules(
    [{"action": "allow", "cidr": "127.0.0.0/8"}, {"action": "allow", "cidr": "::1/128"}]
)

# (user, token generation or None for API keys, expiry s, catalog epoch when verified,
#  networks an API key is bound to, API key id or None, the range the user's created_at_ms
#  must lie in for an API key: the key belongs to that incarnation of the user only)
Verified = tuple[str, int | None, int, int, tuple[IPv4Network | IPv6Network, ...], str | None, tuple[int, int] | None]


def _throttle_policy(policy: AuthPolicy) -> ThrottlePolicy:
    return ThrottlePolicy(
        policy.login_max_failures,
        policy.login_failure_window_s,
        policy.login_lockout_s,
        policy.login_user_slowdown_after_failures,
        policy.login_user_slowdown_max_s,
    )


def _hash_parameters(policy: AuthPolicy) -> HashParameters:
    return HashParameters(
        policy.password_hash_time_cost, policy.password_hash_memory_kib, policy.password_hash_parallelism
    )


class Authenticator:
    def __init__(
        self,
        documents: CatalogStore,
        seed_policy: AuthPolicy,
        audit: AuditLog,
        cluster_key: ClusterKey,
        hashing: HashingPool,
    ) -> None:
        """`documents`: the catalog (read on every cache miss, written by a password rehash);
        `seed_policy`: the node's configured policy, used only while the catalog holds none;
        `cluster_key` opens the signing secrets sealed in the catalog (cluster_key.py);
        `hashing` runs argon2 off the event loop, bounded (passwords.py)."""
        self._documents = documents
        self.cluster_key = cluster_key
        self._audit = audit
        self.hashing = hashing
        self._token_cache: dict[str, Verified] = {}  # by Authorization header value
        self.key_last_used: dict[str, int] = {}  # API key id -> epoch seconds, this node only
        self._principals: dict[str, tuple[int, int, catalog.Principal]] = {}  # user -> (epoch, version, p)
        self._host_rules: tuple[int, tuple[hba.HostRule, ...]] | None = None  # (epoch, rules)
        self._host_decisions: dict[tuple[str, str], hba.Decision] = {}
        self._tokens = Tokens(documents, cluster_key)
        self._seed_policy = seed_policy
        self._policy = (-1, seed_policy)  # (epoch, policy in force)
        self._throttle = LoginThrottle(_throttle_policy(seed_policy))
        self.passwords = Passwords(_hash_parameters(seed_policy))
        self._dummy_hash = self.passwords.hash(secrets.token_hex(16))  # for logins of unknown users
        self._dummy_hash_parameters = self.passwords.parameters

    # -- catalog lookups -----------------------------------------------------------

    def policy(self) -> AuthPolicy:
        """The cluster's auth policy (the last good one while the stored one is damaged)."""
        epoch = self._documents.epoch
        if self._policy[0] == epoch:
            return self._policy[1]
        try:
            found = self._documents.document(catalog.AUTH_KEY)
            policy = self._seed_policy if found is None else auth_policy.from_document(found[1])
        except DocumentError:
            policy = self._policy[1]  # keep the last good policy; catalog_health reports the document
        if policy != self._policy[1]:
            self._throttle.policy = _throttle_policy(policy)
            if _hash_parameters(policy) != self.passwords.parameters:
                self.passwords = Passwords(_hash_parameters(policy))
        self._policy = (epoch, policy)
        return policy

    def principal(self, name: str) -> catalog.Principal | None:
        epoch = self._documents.epoch
        cached = self._principals.get(name)
        if cached is not None and cached[0] == epoch:
            return cached[2]
        found = self._documents.usable(catalog.user_key(name))
        if found is None:
            self._principals.pop(name, None)
            return None
        version, user = found
        if not catalog_rules.may_log_in(user, time.time()):
            self._principals.pop(name, None)
            return None  # a locked or expired user's tokens stop working at once
        roles = {}
        for role_name in user.get("roles", []):
            role = self._documents.usable(catalog.role_key(role_name))
            if role is not None:
                roles[role_name] = role[1]
        principal = catalog.resolve_principal(user, roles)
        self._principals[name] = (epoch, version, principal)
        return principal

    def host_rules(self) -> tuple[hba.HostRule, ...]:
        epoch = self._documents.epoch
        if self._host_rules is not None and self._host_rules[0] == epoch:
            return self._host_rules[1]
        try:
            found = self._documents.document(catalog.HBA_KEY)
            rules = hba.parse_rules(found[1]["rules"] if found is not None else hba.DEFAULT_RULES)
        except DocumentError:
            # Damaged in a WAL or snapshot (writes are checked): catalog_health reports it.
            rules = self._host_rules[1] if self._host_rules is not None else _LOOPBACK_ONLY
        self._host_rules = (epoch, rules)
        self._host_decisions.clear()
        return rules

    def check_host(self, address: str, principal: catalog.Principal) -> None:
        self._check_host(address, principal.name, principal.roles)

    def _check_host(self, address: str, name: str, roles: tuple[str, ...]) -> None:
        rules = self.host_rules()  # first: it empties the decision cache when the catalog changed
        decision = self._host_decisions.get((address, name))
        if decision is None:
            decision = hba.decide(rules, address, name, roles)
            if len(self._host_decisions) >= HOST_DECISIONS_MAX:
                self._host_decisions.clear()
            self._host_decisions[(address, name)] = decision
        if not decision.allowed:
            metrics.AUTH_FAILURES.labels("host_rules").inc()
            raise Forbidden(f"user {name!r} may not connect from {address}: {decision.reason()}")

    # -- login ---------------------------------------------------------------------

    async def login(self, username: str, password: str, address: str) -> tuple[str, int]:
        """Check a password off the event loop; returns (token, expires_at_s).

        In this order, each step refusing before the next costs anything: host rules (403,
        the same answer whatever the password), the throttle's reservation (429), a place in
        the hashing pool (429), the password (401). Every outcome goes to the audit log,
        refusals aggregated (audit.py).
        """
        self.policy()  # the lockout and hashing parameters in force now
        found = self._documents.usable(catalog.user_key(username))
        user = found[1] if found is not None else None
        try:
            # An unknown user is decided as a user with no roles: the rules cannot tell them apart.
            self._check_host(address, username, tuple(user.get("roles", [])) if user is not None else ())
        except Forbidden:
            self._audit.refused("login_rejected", address, user=username, reason="host rules")
            raise
        attempt = self._throttle.reserve(username, address, time.monotonic())
        if not isinstance(attempt, Attempt):
            metrics.AUTH_FAILURES.labels("throttled").inc()
            self._audit.refused("login_throttled", address, user=username, retry_after_s=ceil(attempt))
            raise TooManyRequests(
                "too many failed logins for this user or address; try again later", retry_after_s=ceil(attempt)
            )
        try:
            ok = await self._verify_password(user, password)
        except HashingBusy:
            self._throttle.released(attempt)
            metrics.AUTH_FAILURES.labels("login_busy").inc()
            self._audit.refused("login_busy", address, user=username)
            raise TooManyRequests(
                "the node is busy checking other logins; try again shortly", retry_after_s=HASHING_BUSY_RETRY_S
            ) from None
        except BaseException:
            self._throttle.released(attempt)  # cancelled (the client left): not a failure
            raise
        if not ok or user is None or found is None or not catalog_rules.may_log_in(user, time.time()):
            metrics.AUTH_FAILURES.labels("bad_credentials").inc()
            self._audit.refused("login_failed", address, user=username)
            locked = [describe(key) for key in self._throttle.failed(attempt, time.monotonic())]
            if locked:
                lockout_s = self._throttle.policy.lockout_s
                self._audit.refused("login_lockout", address, user=username, keys=locked, lockout_s=lockout_s)
            raise Unauthorized(_BAD_CREDENTIALS)
        self._throttle.succeeded(attempt)
        principal = self.principal(username)
        if principal is None:  # deleted or locked while the password was checked
            raise Unauthorized(_BAD_CREDENTIALS)
        self.check_host(address, principal)  # its roles may have changed meanwhile
        if self.passwords.needs_rehash(user["password_hash"]):
            await self._rehash(username, found[0], user, password)
        self._audit.record("login_ok", user=username, address=address)
        return self.issue_token(username, int(user.get("token_generation", 1)))

    async def _verify_password(self, user: dict[str, Any] | None, password: str) -> bool:
        """One verify in the hashing pool; HashingBusy when it is full."""
        passwords = self.passwords
        # An unknown user costs a real verify too, made with today's parameters, so timing
        # does not reveal who exists.
        if self._dummy_hash_parameters != passwords.parameters:
            self._dummy_hash = await self.hashing.run(passwords.hash, secrets.token_hex(16))
            self._dummy_hash_parameters = passwords.parameters
        password_hash = user["password_hash"] if user is not None else self._dummy_hash
        return await self.hashing.run(passwords.verify, password_hash, password)

    async def _rehash(self, username: str, version: int, user: dict[str, Any], password: str) -> None:
        """The hashing parameters changed since this hash was made: store a new one.

        The password stays the same, so the user's tokens stay valid. If the document
        changed meanwhile (an admin edit), the next login tries again.
        """
        new_hash = await self.hashing.run(self.passwords.hash, password, bounded=False)
        try:
            rehashed = catalog.encode({**user, "password_hash": new_hash})
            await self._documents.put(catalog.user_key(username), rehashed, version)
        except KvError as error:
            log.info("password rehash of %r skipped: %s", username, error)
            return
        self._audit.record("password_rehashed", user=username)

    def clear_lockout(self, username: str) -> None:
        """An administrator's unlock also ends the user's failed-login lockouts (not an address's)."""
        self._throttle.unlock(username)

    async def hash_password(self, password: str) -> str:
        """A new password's hash for an administrator's request: in the hashing pool, never
        refused (a flood of bad logins must not stop an admin from changing passwords)."""
        return await self.hashing.run(self.passwords.hash, password, bounded=False)

    def issue_token(self, username: str, token_generation: int) -> tuple[str, int]:
        return self._tokens.issue(username, token_generation, self.policy().token_ttl_s)

    # -- every request ---------------------------------------------------------------

    def _forget(self, authorization: str | None) -> None:
        """Drop a header's cached verdict once its user or key no longer stands behind it."""
        if authorization:
            self._token_cache.pop(authorization, None)

    def authenticate(self, authorization: str | None, address: str = "") -> catalog.Principal:
        # The cache is keyed by the whole header value: a hit costs one dict lookup.
        cached = self._token_cache.get(authorization) if authorization else None
        if cached is None or cached[2] <= time.time() or cached[3] != self._documents.epoch:
            cached = self._verify_header(authorization)  # also when keys may have changed
        username, generation, _expires_at, _epoch, networks, key_id, incarnation = cached
        if networks and not catalog_rules.address_in(address, networks):
            metrics.AUTH_FAILURES.labels("address").inc()
            raise Unauthorized("this API key may not be used from this address")
        principal = self.principal(username)
        if principal is None or (generation is not None and principal.token_generation != generation):
            self._forget(authorization)
            metrics.AUTH_FAILURES.labels("revoked").inc()
            raise Unauthorized("token is no longer valid; log in again")
        if incarnation is not None and not incarnation[0] <= principal.created_at_ms <= incarnation[1]:
            # The key's user was deleted and a new user took the name: the key is not theirs.
            self._forget(authorization)
            metrics.AUTH_FAILURES.labels("revoked").inc()
            raise Unauthorized("this API key belonged to a deleted user of that name")
        self.check_host(address, principal)
        if key_id is not None:
            self.key_last_used[key_id] = int(time.time())
        return principal

    def _verify_header(self, authorization: str | None) -> Verified:
        if not authorization:
            metrics.AUTH_FAILURES.labels("missing").inc()
            raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            metrics.AUTH_FAILURES.labels("malformed").inc()
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        verified = self._verify_api_key(token) if catalog_rules.is_api_key(token) else self._verify_jwt(token)
        if len(self._token_cache) >= TOKEN_CACHE_MAX:
            now = int(time.time())
            self._token_cache = {t: v for t, v in self._token_cache.items() if v[2] > now}
            if len(self._token_cache) >= TOKEN_CACHE_MAX:
                self._token_cache.clear()
        self._token_cache[authorization] = verified
        return verified

    def _verify_api_key(self, token: str) -> Verified:
        parsed = catalog_rules.parse_api_key(token)
        found = None if parsed is None else self._documents.usable(catalog.apikey_key(parsed.key_id))
        if parsed is None or found is None or not catalog_rules.secret_matches(found[1], parsed.secret):
            metrics.AUTH_FAILURES.labels("invalid_token").inc()
            raise Unauthorized("invalid API key")
        key = found[1]
        expires_at = catalog_rules.key_expires_at(key)
        if expires_at <= time.time():
            metrics.AUTH_FAILURES.labels("expired").inc()
            raise Unauthorized(f"API key {key['name']!r} has expired")
        networks, incarnation = catalog_rules.key_networks(key), catalog_rules.key_incarnation(key)
        return (key["user"], None, expires_at, self._documents.epoch, networks, parsed.key_id, incarnation)

    def _verify_jwt(self, token: str) -> Verified:
        sub, gen, exp = self._tokens.verify(token)
        return (sub, gen, exp, self._documents.epoch, (), None, None)
