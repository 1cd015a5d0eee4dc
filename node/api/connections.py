"""Open HTTP connections by the role of who sent requests on them (kvstore_connections_active).

granian accepts and closes connections in Rust and tells the app of neither: a request's scope
carries only the peer's `ip:port`. So the adapter notes, per peer, the roles of the last
authenticated request on that connection, and a scrape reads the kernel's table of TCP
connections (/proc/net/tcp and tcp6) for the ones open on the node's listening ports: each is
counted under the roles noted for its peer, or as `anonymous` when no authenticated request
has come on it yet (just accepted, still in the listen backlog, or only probes and logins).
Notes for connections the kernel no longer lists are dropped then.
"""

from __future__ import annotations

import ipaddress
import sys
from collections import Counter
from collections.abc import Iterable

ANONYMOUS = "anonymous"
NO_ROLE = "none"  # authenticated, but the principal holds no role
_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_ESTABLISHED = "01"
# Peers noted between two scrapes before the notes are pruned anyway (a node nobody scrapes).
_PRUNE_AT = 65536

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Peer = tuple[Address, int]


class Connections:
    def __init__(self, ports: Iterable[int]) -> None:
        self.ports = frozenset(ports)
        self._roles: dict[str, tuple[str, ...]] = {}  # RSGI's client "ip:port" -> the principal's roles

    def note(self, client: str, roles: tuple[str, ...]) -> None:
        """An authenticated request came from `client`: its connection is counted under `roles`."""
        self._roles[client] = roles
        if len(self._roles) > _PRUNE_AT:
            self.count()

    def count(self) -> Counter[str]:
        """Open connections to the listening ports by role label (the roles joined by commas,
        sorted), `anonymous` always present; prunes the notes of closed connections."""
        open_peers = _established(self.ports)
        role_of: dict[Peer, str] = {}
        for client, roles in list(self._roles.items()):
            peer = _parse_client(client)
            if peer in open_peers:
                role_of[peer] = ",".join(sorted(roles)) or NO_ROLE
            else:
                del self._roles[client]
        counts: Counter[str] = Counter({ANONYMOUS: 0})
        for peer in open_peers:
            counts[role_of.get(peer, ANONYMOUS)] += 1
        return counts


def _parse_client(client: str) -> Peer | None:
    host, _, port = client.rpartition(":")
    try:
        return _plain(ipaddress.ip_address(host.strip("[]"))), int(port)
    except ValueError:
        return None


def _plain(address: Address) -> Address:
    """An IPv4 peer of a dual-stack socket is listed as ::ffff:a.b.c.d; RSGI may say a.b.c.d."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _established(ports: frozenset[int]) -> set[Peer]:
    """The remote ends of the established TCP connections whose local port is one of `ports`."""
    peers: set[Peer] = set()
    for table in _TCP_TABLES:
        try:
            with open(table, encoding="ascii") as lines:
                next(lines)  # the column titles
                for line in lines:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if fields[3] == _ESTABLISHED and local_port in ports:
                        peers.add(_decode(fields[2]))
        except FileNotFoundError:
            continue  # no IPv6 in this kernel or namespace
    return peers


def _decode(field: str) -> Peer:
    """`ADDR:PORT` of /proc/net/tcp*: the address in the kernel's byte order, 32 bits at a time."""
    address_hex, port_hex = field.split(":")
    raw = bytes.fromhex(address_hex)
    # Each 32-bit word of the network-order address is printed as a host-order int.
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address: Address = ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)
    return _plain(address), int(port_hex, 16)
