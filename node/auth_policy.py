"""The cluster-wide authentication policy, `_sys.settings:auth`. Pure.

    {"password_min_length", "token_ttl_s", "login_max_failures", "login_failure_window_s",
     "login_lockout_s", "login_user_slowdown_after_failures", "login_user_slowdown_max_s",
     "password_hash_time_cost", "password_hash_memory_kib",
     "password_hash_parallelism"}

It lives in the catalog, not in each node's config, so every node of a cluster applies
the same policy (a replica verifies the same passwords and issues tokens of the same
lifetime as its primary) and a change is replicated and effective on the next request.
Initdb seeds it from the node's settings of the same names; a field missing from the
document has the default below. Changed with `kvctl settings set` (PATCH
/v1/admin/settings/auth).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final


class PolicyError(ValueError):
    """A policy document or change that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    password_min_length: int = 8
    token_ttl_s: int = 3600
    login_max_failures: int = 5  # within login_failure_window_s, then the user/address is locked
    login_failure_window_s: int = 300
    login_lockout_s: int = 300
    # Failures of one user from every address within login_failure_window_s after which each
    # further attempt waits 1 s, doubling up to login_user_slowdown_max_s (throttle.py). Above
    # login_max_failures, so one address alone is locked out of the pair before it slows the user.
    login_user_slowdown_after_failures: int = 20
    login_user_slowdown_max_s: int = 60
    # argon2id; stored hashes made with other parameters are rehashed at the user's next login
    password_hash_time_cost: int = 3
    password_hash_memory_kib: int = 64 * 1024
    password_hash_parallelism: int = 4

    def to_document(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: Final = tuple(field.name for field in dataclasses.fields(AuthPolicy))
# (minimum, maximum) of each field: a policy outside them would lock everyone out or make a
# login cost the node seconds of CPU and gigabytes of memory.
BOUNDS: Final[dict[str, tuple[int, int]]] = {
    "password_min_length": (1, 1024),
    "token_ttl_s": (10, 30 * 24 * 3600),
    "login_max_failures": (1, 1000),
    "login_failure_window_s": (1, 24 * 3600),
    "login_lockout_s": (1, 24 * 3600),
    "login_user_slowdown_after_failures": (1, 100_000),
    "login_user_slowdown_max_s": (1, 3600),
    "password_hash_time_cost": (1, 20),
    "password_hash_memory_kib": (8, 4 * 1024 * 1024),
    "password_hash_parallelism": (1, 64),
}


def from_document(document: Any) -> AuthPolicy:
    """Check a stored (or sent) policy document; missing fields take their defaults."""
    if not isinstance(document, dict):
        raise PolicyError("the auth settings must be a JSON object of setting: integer")
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise PolicyError(f"unknown auth setting(s): {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    values = {}
    for name, value in document.items():
        minimum, maximum = BOUNDS[name]
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 12.0 is the integer 12 (as JSON Schema says)
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise PolicyError(f"{name} must be an integer from {minimum} to {maximum}, got {value!r}")
        values[name] = value
    policy = AuthPolicy(**values)
    if policy.password_hash_memory_kib < 8 * policy.password_hash_parallelism:
        raise PolicyError("password_hash_memory_kib must be at least 8 x password_hash_parallelism (argon2)")
    return policy


def changed(policy: AuthPolicy, changes: Any) -> AuthPolicy:
    """`policy` with some fields changed (a PATCH), checked as a whole."""
    if not isinstance(changes, dict) or not changes:
        raise PolicyError('send an object of the settings to change, such as {"password_min_length": 12}')
    return from_document({**policy.to_document(), **changes})
