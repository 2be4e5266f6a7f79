"""Where a webhook may point: http(s) URLs whose host resolves only to public addresses,
unless WEBHOOK_ALLOWED_NETWORKS lists the network (tests allow 127.0.0.1/32).

Every address the name resolves to is checked, at registration and again before each
delivery, and the delivery connects to the address that was checked (no second lookup a
DNS rebinding could answer differently)."""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import Invalid

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    host: str
    address: str  # the vetted address to connect to


def allowed_networks(cidrs: list[str]) -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL, else Invalid."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Invalid(f"url: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("url: must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise Invalid("url: must not carry credentials")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(url: str, allowed: list[Network]) -> Target:
    """Resolve the URL's host; Invalid unless every address may be called."""
    _, host, port = check_url(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise Invalid(f"url: cannot resolve {host!r} ({exc})") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise Invalid(f"url: {host!r} has no address")
    for address in addresses:
        if not _permitted(address, allowed):
            raise Invalid(f"url: {host!r} resolves to {address}, a private or reserved address")
    return Target(url=url, host=host, address=str(addresses[0]))


def _permitted(address: Address, allowed: list[Network]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return True
    return address.is_global and not address.is_multicast
