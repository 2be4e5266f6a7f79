"""A bounded fuzz of webhook registration: URLs built from odd parts (control characters,
whitespace, Unicode hosts, odd ports, IPv6 literals with IPv4 inside, credentials, great
lengths, percent-encodings). Registration answers 201 or 422, never 5xx; an accepted URL is
stored in its normal form, and the sender sends to it; a refused target gets the one generic
message. Names resolve through a stand-in resolver, so no lookup leaves the machine."""

import hashlib
import ipaddress
import os
import random
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Invalid
from app.webhooks import attempts, sender, targets, urls
from app.webhooks.schemas import NewWebhook
from tests.conftest import auth, token_for
from tests.factories import make_user

CASES = 400
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
# What a name resolves to, picked by the name's hash: public, private, or a mix
ANSWERS = [
    [PUBLIC_V4],
    [PUBLIC_V6],
    [PUBLIC_V4, PUBLIC_V6],
    ["10.0.0.7"],
    ["127.0.0.1"],
    ["169.254.169.254"],
    [PUBLIC_V4, "192.168.0.1"],
    ["::1"],
    ["fe80::1"],
    ["::ffff:10.0.0.1"],
    ["64:ff9b::a00:1"],
    ["64:ff9b::5db8:d822"],
    ["2002:a00:1::1"],
    ["2001:0:4136:e378:8000:63bf:3fff:fdd2"],
    [],
]

SCHEMES = ["http://", "https://", "HTTP://", "hTtPs://", "ftp://", "", "//", "http:/", "http:"]
USERINFO = ["", "", "", "user@", "user:pw@", ":@", "@", "a%40b@", "u\r\n@"]
PORTS = ["", "", "", ":80", ":443", ":8080", ":8443", ":22", ":0", ":65535", ":65536"]
PORTS += [":99999", ":", ":-1", ":08080", ":abc", ":4\u0663"]
PATHS = ["", "/", "/hook", "/a b", "/%zz", "/é", "/a/../../b", "/%0d%0aX:%20y", "/\u202e"]
QUERIES = ["", "", "?a=1", "?a=%0d%0a", "?é=ü", "?" + "q" * 500, "?a=1&a=2"]
FRAGMENTS = ["", "", "#frag", "#a b", "#\u0000"]
ODD_CHARS = ["\r", "\n", "\r\n", "\t", " ", "\x00", "\x1b", "\x7f", "\u0085", "\u00a0"]
ODD_CHARS += ["\u2028", "\u200b", "\ufeff", "\u3000", "\\", "%", "#", "?", "@", "[", "]"]


def _host(rng: random.Random) -> str:
    label = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_") for _ in range(8))
    return rng.choice(
        [
            PUBLIC_V4,
            "10.1.2.3",
            "127.0.0.1",
            "0.0.0.0",  # noqa: S104 - a target to refuse, nothing listens
            "2130706433",
            "0x7f.1",
            "127.1",
            "0177.0.0.1",
            f"{PUBLIC_V4}.",
            f"{label}.example",
            f"{label.upper()}.Example.",
            "bücher.de",
            "例え.テスト",
            "xn--bcher-kva.de",
            "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0ecom",  # fullwidth letters and dot
            "xn--zz.example",
            "-bad.example",
            "a..b",
            "a" * 64 + ".example",
            ".".join(["a" * 63] * 5),
            "%31%32%37.0.0.1",
            "localhost",
            f"[{PUBLIC_V6}]",
            f"[{PUBLIC_V6.upper()}]",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[64:ff9b::127.0.0.1]",
            f"[64:ff9b::{PUBLIC_V4}]",
            "[64:ff9b:1::a00:1]",
            "[::10.0.0.1]",
            "[2002:7f00:1::]",
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
            "[fe80::1%25eth0]",
            "[::]",
            "[1:2:3]",
            "[v1.x]",
            "",
        ]
    )


def _url(rng: random.Random) -> str:
    """Each part ordinary or odd, at random: about a fifth of the URLs are well formed."""

    def part(ordinary: list[str], odd: list[str]) -> str:
        return rng.choice(ordinary if rng.random() < 0.75 else odd)

    url = "".join(
        [
            part(["http://", "https://"], SCHEMES),
            part([""], USERINFO),
            _host(rng),
            part(["", ":443", ":8080"], PORTS),
            part(["/", "/hook", "/a/b"], PATHS) + "/x" * rng.choice([0, 0, 10, 700]),
            part([""], QUERIES),
            part([""], FRAGMENTS),
        ]
    )
    for _ in range(rng.choice([0, 0, 0, 0, 1, 2])):  # odd characters anywhere
        at = rng.randrange(len(url) + 1)
        url = url[:at] + rng.choice(ODD_CHARS) + url[at:]
    if rng.random() < 0.1:  # around it: the schema strips outer whitespace
        url = rng.choice([" ", "\n", "\t", "\u00a0"]) + url + rng.choice(["", " ", "\r\n"])
    return url


async def _lookup(host: str, port: int) -> list[targets.Address]:
    """A stand-in resolver: the same name always gets the same answer."""
    assert 0 < port < 65536, port
    assert host.isascii(), host
    answer = ANSWERS[int(hashlib.sha256(host.encode()).hexdigest(), 16) % len(ANSWERS)]
    if not answer:
        raise Invalid(targets.REFUSED)
    return [ipaddress.ip_address(address) for address in answer]


async def _sends_to(url: str, rules: targets.Policy) -> None:
    """The sender makes its request to the URL as stored."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    claimed = attempts.Claimed(
        1, 0, url, "whsec_x", 1, "comment.created", {}, None, datetime.now(UTC)
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        outcome = await sender.send(client, claimed, rules, deadline_s=5)
    assert outcome == attempts.Outcome(ok=True, status=204), (url, outcome)
    parsed = urls.parse(url)
    [request] = seen
    assert request.headers["host"] == parsed.host_header
    assert request.url.raw_path == httpx.URL(url).raw_path


async def test_fuzzed_urls_are_201_or_422_and_accepted_ones_are_normal_and_sendable(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(targets, "_lookup", _lookup)
    seed = int(os.environ.get("URL_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)  # a failure names its seed: URL_FUZZ_SEED=... reruns it
    headers = auth(token_for((await make_user(session)).id, settings))
    rules = targets.policy(settings)
    outcomes: Counter[str] = Counter()
    for _ in range(CASES):
        url = _url(rng)
        response = await client.post(
            "/webhooks",
            json={"webhook": {"url": url, "events": ["comment.created"]}},
            headers=headers,
        )
        assert response.status_code in (201, 422), (seed, url, response.status_code, response.text)
        well_formed = _well_formed(url)
        if response.status_code == 422:
            outcomes["refused"] += 1
            [message] = response.json()["errors"]["body"]
            if well_formed is not None:  # refused for its target: the one message
                assert message == targets.REFUSED, (seed, url, message)
                outcomes["refused target"] += 1
            continue
        outcomes["accepted"] += 1
        webhook = response.json()["webhook"]
        stored = webhook["url"]
        assert stored == well_formed, (seed, url)
        assert urls.parse(stored).url == stored, (seed, url)
        await _sends_to(stored, rules)
        deleted = await client.delete(f"/webhooks/{webhook['id']}", headers=headers)
        assert deleted.status_code == 204  # room under the per-user limit
    assert outcomes["accepted"] > 5, (seed, outcomes)
    assert outcomes["refused target"] > 10, (seed, outcomes)


def _well_formed(url: str) -> str | None:
    """The normal form of a URL the schema and the parser take, else None."""
    try:
        return urls.parse(NewWebhook(url=url, events=["comment.created"]).url).url
    except (ValidationError, Invalid):
        return None
