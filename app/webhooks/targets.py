"""Where a webhook may point: an http(s) URL (app/webhooks/urls.py) whose host resolves only
to public addresses, on a usual web port (WEBHOOK_ALLOWED_PORTS).

WEBHOOK_ALLOWED_NETWORKS lists networks that may be called although private or loopback
(tests allow 127.0.0.1/32), on any port: listing a network already trusts what listens
there, and a receiver on it (a test's, an internal service's) rarely listens on 80 or 443.

IPv6 addresses that carry an IPv4 address are judged by it (IPv4-mapped, NAT64's
64:ff9b::/96) or refused outright (IPv4-compatible ::/96, local-use NAT64 64:ff9b:1::/48,
6to4 2002::/16, Teredo 2001::/32): `is_global` alone lets some of them through to whatever
the gateway reaches.

Every address the name resolves to is checked, at registration and again before each
delivery, and the delivery connects to the address that was checked (no second lookup a
DNS rebinding could answer differently). Every refusal gets the same message, REFUSED: which
names resolve, and to what, is none of the caller's business.
"""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from app.config import Settings
from app.errors import Invalid
from app.webhooks import urls

Address = urls.Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED = "url: not a permitted webhook target (public http(s) hosts on allowed ports only)"
RESOLVE_TIMEOUT_S = 5.0
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TUNNELS = tuple(
    ipaddress.IPv6Network(cidr) for cidr in ("::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32")
)


@dataclass(frozen=True, slots=True)
class Policy:
    networks: tuple[Network, ...]
    ports: frozenset[int]


def policy(settings: Settings) -> Policy:
    return Policy(
        networks=tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in settings.webhook_allowed_networks
        ),
        ports=frozenset(settings.webhook_allowed_ports),
    )


@dataclass(frozen=True, slots=True)
class Target:
    url: urls.Url
    address: str  # the vetted address to connect to


async def resolve(text: str, rules: Policy) -> Target:
    """The URL in normal form with an address to call; Invalid unless every address the host
    has may be called."""
    url = urls.parse(text)
    addresses = [url.address] if url.address is not None else await _lookup(url.host, url.port)
    if not addresses or not all(permitted(address, url.port, rules) for address in addresses):
        raise Invalid(REFUSED)
    return Target(url=url, address=str(addresses[0]))


async def _lookup(host: str, port: int) -> list[Address]:
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        return [ipaddress.ip_address(info[4][0]) for info in infos]
    except (OSError, TimeoutError, ValueError):  # no such name, no answer, an odd address
        raise Invalid(REFUSED) from None


def permitted(address: Address, port: int, rules: Policy) -> bool:
    """An allowed network's address on any port; else a public address on an allowed port."""
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    if any(candidate in network for candidate in candidates for network in rules.networks):
        return True
    return port in rules.ports and public(address)


def public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return public(address.ipv4_mapped)
        if address in _NAT64:
            return public(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
        if any(address in network for network in _TUNNELS):
            return False
    return address.is_global and not address.is_multicast
