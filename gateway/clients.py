"""Who is on the other end of the socket: the client address, through trusted proxies only.

A request that comes from a trusted proxy (``CITYGRID_TRUSTED_PROXIES``) is attributed to the
right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy: each proxy appends the
peer it saw, so everything left of the first untrusted hop was written by the client and proves
nothing. A request from anyone else is attributed to the socket's peer, whatever it claims.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, ``v4:port`` or ``[v6]:port``; ``None`` when it is not one."""
    value = text.strip()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in proxies)


def client_address(peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[IPNetwork]) -> str:
    """The client's address, from the socket's ``peer`` and the ``X-Forwarded-For`` header values."""
    if peer is None:
        return UNKNOWN
    current = parse_address(peer)
    if current is None:
        return peer
    if not proxies or not _trusted(current, proxies):
        return str(current)
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break  # written by nobody we trust: the last trusted hop is all we know
        current = address
        if not _trusted(address, proxies):
            return str(address)
    return str(current)


def limit_key(address: str) -> str:
    """The key a per-address limit counts under: an IPv4 address, or the /64 an IPv6 client controls."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed) if parsed is not None else address
