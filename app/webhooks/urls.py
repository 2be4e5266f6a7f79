"""Webhook URLs in one normal form, parsed by httpx's own parser: the one that sends them.

A URL is refused at registration for what the string itself says (these messages name the
problem: they tell nothing about our network), and the form stored is the one the worker
sends to: scheme and host in lower case, an IDNA host in its ASCII form, IP literals in their
canonical form, the default port and any fragment dropped, the path percent-encoded.
`parse(parse(u).url)` is `parse(u)`.
"""

import ipaddress
import re
import unicodedata
from dataclasses import dataclass

import httpx

from app.errors import Invalid

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_LENGTH = 2000
DEFAULT_PORTS = {"http": 80, "https": 443}
# Control and format characters, surrogates and separators: never part of a URL we send to
# (CR/LF would reach the request line; httpx refuses some of them only when sending).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A last label like these makes a host an IPv4 address to browsers (WHATWG) and to
# getaddrinfo (inet_aton: "2130706433" and "0x7f.1" are 127.0.0.1): only the dotted-quad
# form is accepted, so the host checked is the host written.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


@dataclass(frozen=True, slots=True)
class Url:
    url: str  # the normal form
    host: str  # ASCII: the name to resolve, or the IP literal without brackets
    port: int  # written or the scheme's default
    address: Address | None  # the host, when it is an IP literal
    host_header: str  # what `Host` says: the host, bracketed if IPv6, and a port not default


def parse(text: str) -> Url:
    """The URL in normal form, else Invalid."""
    if any(ch.isspace() or unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in text):
        raise Invalid("url: must not contain whitespace or control characters")
    try:
        url = httpx.URL(text)
        raw_host = url.raw_host.decode("ascii")
        port = url.port
    except (httpx.InvalidURL, ValueError):  # UnicodeError included (IDNA)
        raise Invalid("url: not a valid URL") from None
    if url.scheme not in DEFAULT_PORTS or not raw_host:
        raise Invalid("url: must be an absolute http:// or https:// URL")
    if url.userinfo:
        raise Invalid("url: must not carry credentials")
    if port is not None and not 0 < port < 65536:
        raise Invalid("url: port must be between 1 and 65535")
    host, address = _host(raw_host)
    try:
        normal = str(url.copy_with(host=host, raw_path=url.raw_path, fragment=None))
    except (httpx.InvalidURL, ValueError):
        raise Invalid("url: not a valid URL") from None
    if len(normal) > MAX_LENGTH:
        raise Invalid(f"url: longer than {MAX_LENGTH} characters once normalised")
    default = DEFAULT_PORTS[url.scheme]
    port = port or default
    bracketed = f"[{host}]" if address is not None and address.version == 6 else host
    header = bracketed if port == default else f"{bracketed}:{port}"
    return Url(normal, host, port, address, header)


def _host(raw: str) -> tuple[str, Address | None]:
    """The host's canonical form, and its address when it is an IP literal."""
    if ":" in raw:
        try:
            v6 = ipaddress.IPv6Address(raw)  # a zone id ("%25eth0") is refused here
        except ValueError:
            raise Invalid("url: not a valid IPv6 address") from None
        if v6.scope_id is not None:
            raise Invalid("url: not a valid IPv6 address")
        return str(v6), v6
    host = raw.lower()
    host = host.removesuffix(".")  # the root's dot: neither SNI nor most Host parsers take it
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            v4 = ipaddress.IPv4Address(host)
        except ValueError:
            raise Invalid("url: not a valid IPv4 address") from None
        return str(v4), v4
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise Invalid("url: not a valid host name")
    return host, None
