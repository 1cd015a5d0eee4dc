"""Authentication: passwords, JWT login tokens, API keys, host rules: who a request is.

Passwords are verified in the hashing pool (passwords.py: argon2 takes ~100 ms, must never
run on the event loop, and its queue is bounded); a login is checked against the host
rules first and reserves its throttle attempt before any hash (throttle.py), so neither a
rejected address nor a throttled guess costs a hash. Verified tokens are cached, so the
request path pays a dict lookup instead of an HMAC (~27 us). A token names its signing
key (`kid`) and the user's `token_generation`; bumping the generation (password change,
lock, delete) invalidates every token the user holds on its next use. Privileges are not in the token: they are
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

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Network, IPv6Network
from math import ceil
from typing import Any, Final

import jwt

from . import auth_policy, catalog, catalog_documents, hba, metrics, signing_keys
from .audit import AuditLog
from .auth_policy import AuthPolicy
from .catalog_documents import DocumentError
from .cluster_key import ClusterKey, ClusterKeyError
from .errors import Forbidden, KvError, TooManyRequests, Unauthorized
from .passwords import HashingBusy, HashingPool, HashParameters, Passwords
from .store import VALUE, VERSION, Store
from .throttle import Attempt, LoginThrottle, ThrottlePolicy, describe

log = logging.getLogger(__name__)

JWT_ALGORITHM: Final = "HS256"
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
# Writes one catalog document with compare-and-set on its version (a rehashed password).
CatalogRewrite = Callable[[str, bytes, int], Awaitable[object]]
API_KEY_PREFIX: Final = "kv_"
NO_EXPIRY_S: Final = 2**62


def api_key_digest(secret: str) -> str:
    """API key secrets are 192 random bits: a plain SHA-256 is enough (and fast on every request)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _address_in(address: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _throttle_policy(policy: AuthPolicy) -> ThrottlePolicy:
    return ThrottlePolicy(
        policy.login_max_failures,
        policy.login_failure_window_s,
        policy.login_lockout_s,
        policy.login_user_slowdown_after_failures,
        policy.login_user_slowdown_max_s,
    )


def _claims(claims: dict[str, Any]) -> tuple[str, int, int]:
    """(sub, gen, exp) of a correctly signed token, checked in this one place: a claim of the
    wrong type is an invalid token (401), never an error deeper in (a 500). PyJWT has checked
    that they are present and that exp and iat are numbers."""
    sub, gen, exp = claims["sub"], claims["gen"], claims["exp"]
    if not isinstance(sub, str) or not sub:
        raise jwt.InvalidTokenError("claim 'sub' must be a user name")
    if not isinstance(gen, int) or isinstance(gen, bool):
        raise jwt.InvalidTokenError("claim 'gen' must be an integer")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise jwt.InvalidTokenError("claim 'exp' must be a number")
    return sub, gen, int(exp)


def _hash_parameters(policy: AuthPolicy) -> HashParameters:
    return HashParameters(
        policy.password_hash_time_cost, policy.password_hash_memory_kib, policy.password_hash_parallelism
    )


def _may_log_in(user: dict[str, Any]) -> bool:
    valid_until = user.get("valid_until")
    expired = valid_until is not None and time.time() >= valid_until
    return bool(user.get("can_login", True)) and not user.get("locked_reason") and not expired


class Authenticator:
    def __init__(
        self,
        store: Store,
        seed_policy: AuthPolicy,
        audit: AuditLog,
        rewrite: CatalogRewrite,
        cluster_key: ClusterKey,
        hashing: HashingPool,
    ) -> None:
        """`seed_policy`: the node's configured policy, used only while the catalog holds none;
        `cluster_key` opens the signing secrets sealed in the catalog (cluster_key.py);
        `hashing` runs argon2 off the event loop, bounded (passwords.py)."""
        self._store = store
        self.cluster_key = cluster_key
        self._audit = audit
        self.hashing = hashing
        self._rewrite = rewrite
        self._token_cache: dict[str, Verified] = {}  # by Authorization header value
        self.key_last_used: dict[str, int] = {}  # API key id -> epoch seconds, this node only
        self._principals: dict[str, tuple[int, int, catalog.Principal]] = {}  # user -> (epoch, version, p)
        self._host_rules: tuple[int, tuple[hba.HostRule, ...]] | None = None  # (epoch, rules)
        self._host_decisions: dict[tuple[str, str], hba.Decision] = {}
        # (epoch, version, (current kid, kid -> opened secret)) of the last good signing keys
        self._signing: tuple[int, int, tuple[str, dict[str, str]]] | None = None
        self._seed_policy = seed_policy
        self._policy = (-1, seed_policy)  # (epoch, policy in force)
        self._throttle = LoginThrottle(_throttle_policy(seed_policy))
        self.passwords = Passwords(_hash_parameters(seed_policy))
        self._dummy_hash = self.passwords.hash(secrets.token_hex(16))  # for logins of unknown users
        self._dummy_hash_parameters = self.passwords.parameters

    # -- catalog lookups -----------------------------------------------------------

    def _document(self, key: str) -> tuple[int, dict[str, Any]] | None:
        """The checked document at `key`, None when there is none; DocumentError when damaged."""
        entry = self._store.get(key, time.time_ns() // 1_000_000)
        if entry is None:
            return None
        return entry[VERSION], catalog_documents.parse(key, entry[VALUE])

    def _usable(self, key: str) -> tuple[int, dict[str, Any]] | None:
        """Like `_document`, but a damaged document counts as none (catalog_health reports it)."""
        try:
            return self._document(key)
        except DocumentError:
            return None

    def policy(self) -> AuthPolicy:
        """The cluster's auth policy (the last good one while the stored one is damaged)."""
        epoch = self._store.catalog_epoch
        if self._policy[0] == epoch:
            return self._policy[1]
        try:
            found = self._document(catalog.AUTH_KEY)
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
        epoch = self._store.catalog_epoch
        cached = self._principals.get(name)
        if cached is not None and cached[0] == epoch:
            return cached[2]
        found = self._usable(catalog.user_key(name))
        if found is None:
            self._principals.pop(name, None)
            return None
        version, user = found
        if not _may_log_in(user):
            self._principals.pop(name, None)
            return None  # a locked or expired user's tokens stop working at once
        roles = {}
        for role_name in user.get("roles", []):
            role = self._usable(catalog.role_key(role_name))
            if role is not None:
                roles[role_name] = role[1]
        principal = catalog.resolve_principal(user, roles)
        self._principals[name] = (epoch, version, principal)
        return principal

    def _signing_keys(self) -> tuple[str, dict[str, str]]:
        """(current kid, kid -> secret): the catalog's keys opened with the cluster key, opened
        again only when their document changed (not on every catalog change)."""
        epoch = self._store.catalog_epoch
        cached = self._signing
        if cached is not None and cached[0] == epoch:
            return cached[2]
        try:
            found = self._document(catalog.JWT_KEYS_KEY)
        except DocumentError:
            # Keep the last good keys. With none (damaged since before this start), sign with a
            # key of this node's own, so an administrator can log in here and repair the
            # document (`kvctl jwt-key rotate`); its tokens are valid on this node only.
            if cached is None:
                log.critical(
                    "the signing keys in %s are damaged; signing with a temporary key of this node until an "
                    "administrator runs kvctl jwt-key rotate",
                    catalog.JWT_KEYS_KEY,
                )
                kid, secret = signing_keys.new_key()
                cached = (epoch, -1, (kid, {kid: secret}))
            self._signing = (epoch, cached[1], cached[2])
            return cached[2]
        if found is None:
            raise Unauthorized("this node has no token signing key yet (catalog not bootstrapped)")
        version, document = found
        if cached is not None and cached[1] == version:
            opened = cached[2]  # another catalog document changed
        else:
            try:
                opened = (document["current"], signing_keys.open_secrets(document, self.cluster_key))
            except ClusterKeyError as error:
                # Sealed under another key than this node's (the start checks this, so only a
                # document written since): its tokens are refused here, never accepted unchecked.
                # Logged once per version of the document: the version is remembered below.
                log.critical("%s; tokens signed with it are refused on this node", error)
                if cached is None:
                    raise Unauthorized("this node cannot open the cluster's token signing keys; see its log") from None
                opened = cached[2]
        self._signing = (epoch, version, opened)
        return opened

    def host_rules(self) -> tuple[hba.HostRule, ...]:
        epoch = self._store.catalog_epoch
        if self._host_rules is not None and self._host_rules[0] == epoch:
            return self._host_rules[1]
        try:
            found = self._document(catalog.HBA_KEY)
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
        found = self._usable(catalog.user_key(username))
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
        if not ok or user is None or found is None or not _may_log_in(user):
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
            await self._rewrite(
                catalog.user_key(username), catalog.encode({**user, "password_hash": new_hash}), version
            )
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
        kid, secrets_by_kid = self._signing_keys()
        now = int(time.time())
        expires_at = now + self.policy().token_ttl_s
        claims = {"sub": username, "gen": token_generation, "iat": now, "exp": expires_at}
        token = jwt.encode(claims, secrets_by_kid[kid], algorithm=JWT_ALGORITHM, headers={"kid": kid})
        return token, expires_at

    # -- every request ---------------------------------------------------------------

    def authenticate(self, authorization: str | None, address: str = "") -> catalog.Principal:
        # The cache is keyed by the whole header value: a hit costs one dict lookup.
        cached = self._token_cache.get(authorization) if authorization else None
        if cached is None or cached[2] <= time.time() or cached[3] != self._store.catalog_epoch:
            cached = self._verify_header(authorization)  # also when keys may have changed
        username, generation, _expires_at, _epoch, networks, key_id, incarnation = cached
        if networks and not _address_in(address, networks):
            metrics.AUTH_FAILURES.labels("address").inc()
            raise Unauthorized("this API key may not be used from this address")
        principal = self.principal(username)
        if principal is None or (generation is not None and principal.token_generation != generation):
            self._token_cache.pop(authorization, None)  # type: ignore[arg-type]
            metrics.AUTH_FAILURES.labels("revoked").inc()
            raise Unauthorized("token is no longer valid; log in again")
        if incarnation is not None and not incarnation[0] <= principal.created_at_ms <= incarnation[1]:
            # The key's user was deleted and a new user took the name: the key is not theirs.
            self._token_cache.pop(authorization, None)  # type: ignore[arg-type]
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
        verified = self._verify_api_key(token) if token.startswith(API_KEY_PREFIX) else self._verify_jwt(token)
        if len(self._token_cache) >= TOKEN_CACHE_MAX:
            now = int(time.time())
            self._token_cache = {t: v for t, v in self._token_cache.items() if v[2] > now}
            if len(self._token_cache) >= TOKEN_CACHE_MAX:
                self._token_cache.clear()
        self._token_cache[authorization] = verified
        return verified

    def _verify_api_key(self, token: str) -> Verified:
        key_id, _, secret = token[len(API_KEY_PREFIX) :].partition("_")
        found = self._usable(catalog.apikey_key(key_id)) if key_id.isalnum() else None
        if found is None or not hmac.compare_digest(found[1]["secret_sha256"], api_key_digest(secret)):
            metrics.AUTH_FAILURES.labels("invalid_token").inc()
            raise Unauthorized("invalid API key")
        key = found[1]
        expires_at = key.get("expires_at") or NO_EXPIRY_S
        if expires_at <= time.time():
            metrics.AUTH_FAILURES.labels("expired").inc()
            raise Unauthorized(f"API key {key['name']!r} has expired")
        networks = tuple(ipaddress.ip_network(cidr) for cidr in key.get("cidrs", []))
        user_created_at_ms = key.get("user_created_at_ms")
        # Keys made before keys recorded their user's incarnation: the user must predate the key.
        incarnation = (
            (0, key["created_at_ms"]) if user_created_at_ms is None else (user_created_at_ms, user_created_at_ms)
        )
        return (key["user"], None, int(expires_at), self._store.catalog_epoch, networks, key_id, incarnation)

    def _verify_jwt(self, token: str) -> Verified:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            secret = self._signing_keys()[1].get(kid) if isinstance(kid, str) else None
            if secret is None:
                raise jwt.InvalidTokenError("unknown signing key")
            claims = jwt.decode(
                token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "iat", "sub", "gen"]}
            )
            sub, gen, exp = _claims(claims)
        except jwt.ExpiredSignatureError:
            metrics.AUTH_FAILURES.labels("expired").inc()
            raise Unauthorized("token expired; log in again") from None
        except jwt.InvalidTokenError as error:
            # PyJWT's reasons name what is wrong (a claim, the signature, the algorithm), never a key.
            metrics.AUTH_FAILURES.labels("invalid_token").inc()
            raise Unauthorized(f"invalid token: {error}") from None
        return (sub, gen, exp, self._store.catalog_epoch, (), None, None)
