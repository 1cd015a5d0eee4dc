"""Host rules (PostgreSQL's pg_hba.conf): which users may connect from which networks. Pure.

Rules are ordered; each names a network, optionally a user or a role, and allow or
reject. The first rule that matches the client's address and the user decides; when
none matches, the request is rejected. The rules live in `_sys.settings:hba` as
`{"rules": [...]}`; a catalog without that document uses DEFAULT_RULES (allow all),
which is also what initialisation writes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Final

MAX_RULES: Final = 1000
ACTIONS: Final = ("allow", "reject")
DEFAULT_RULES: Final[list[dict[str, Any]]] = [
    {"action": "allow", "cidr": "0.0.0.0/0"},
    {"action": "allow", "cidr": "::/0"},
]
_RULE_FIELDS: Final = {"action", "cidr", "user", "role", "comment"}


class RuleError(ValueError):
    """A rule set that cannot be used; the message names the rule."""


@dataclass(frozen=True, slots=True)
class HostRule:
    allow: bool
    network: IPv4Network | IPv6Network
    user: str | None  # None: any user
    role: str | None  # None: any role

    def matches(self, address: IPv4Address | IPv6Address, user: str, roles: tuple[str, ...]) -> bool:
        if address.version != self.network.version or address not in self.network:
            return False
        if self.user is not None and self.user != user:
            return False
        return self.role is None or self.role in roles


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: int | None  # index of the deciding rule; None when no rule matched

    def reason(self) -> str:
        return "no host rule matches" if self.rule is None else f"host rule {self.rule} rejects"


def parse_rules(raw: Any) -> tuple[HostRule, ...]:
    """Check a `rules` list as an administrator sent it; RuleError says which rule is wrong."""
    if not isinstance(raw, list):
        raise RuleError('host rules must be a list of {"action", "cidr", "user"?, "role"?}')
    if len(raw) > MAX_RULES:
        raise RuleError(f"at most {MAX_RULES} host rules")
    return tuple(_parse_rule(index, rule) for index, rule in enumerate(raw))


def _parse_rule(index: int, raw: Any) -> HostRule:
    if not isinstance(raw, dict):
        raise RuleError(f"rule {index}: must be an object")
    unknown = set(raw) - _RULE_FIELDS
    if unknown:
        raise RuleError(f"rule {index}: unknown field(s) {', '.join(sorted(unknown))}")
    if raw.get("action") not in ACTIONS:
        raise RuleError(f"rule {index}: action must be 'allow' or 'reject'")
    try:
        if not isinstance(raw.get("cidr"), str):  # ip_network(5) would be 0.0.0.5/32
            raise TypeError
        network = ipaddress.ip_network(raw["cidr"], strict=False)
    except (TypeError, ValueError):
        raise RuleError(f"rule {index}: cidr {raw.get('cidr')!r} is not a network such as 10.0.0.0/8") from None
    for field in ("user", "role", "comment"):
        if raw.get(field) is not None and (not isinstance(raw[field], str) or not 0 < len(raw[field]) <= 256):
            raise RuleError(f"rule {index}: {field} must be text of 1-256 characters")
    return HostRule(raw["action"] == "allow", network, raw.get("user"), raw.get("role"))


def normalise(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored form of checked rules: networks written canonically, empty fields dropped."""
    stored = []
    for rule in raw:
        clean = {key: value for key, value in rule.items() if value is not None}
        clean["cidr"] = str(ipaddress.ip_network(rule["cidr"], strict=False))
        stored.append(clean)
    return stored


def decide(rules: tuple[HostRule, ...], address: str, user: str, roles: tuple[str, ...]) -> Decision:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return Decision(False, None)  # an address we cannot read matches no rule
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 is the IPv4 client 10.1.2.3
    for index, rule in enumerate(rules):
        if rule.matches(ip, user, roles):
            return Decision(rule.allow, index)
    return Decision(False, None)
