"""The token boundary against a real server process: subjects past 64 bits, and a bounded
fuzz of `sub`/`exp`/`iat`/`nbf` signed with the server's own secret (raw JSON, so values PyJWT
would never write get through the signature: 1e999, NaN, 5,000-digit numbers, lone
surrogates, deep nesting). No answer is a 5xx, and the log writer still writes afterwards."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import jwt
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.server_process import Server, serve

CASES = 400
CONCURRENCY = 8
MAX_PAYLOAD_BYTES = 6000  # the token stays well inside uvicorn's header limits
HEADER = b'{"alg":"HS256","typ":"JWT"}'
DROPPED = 0  # no answer: the server closed the connection


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(database_url, tmp_path_factory.mktemp("token-boundary")) as server:
        yield server


@pytest.fixture
async def user_id(server: Server, engine: AsyncEngine) -> AsyncIterator[int]:
    """A real account on the server, so that well-formed tokens reach a user."""
    name = f"fuzz{uuid.uuid4().hex[:12]}"
    body = {"user": {"username": name, "email": f"{name}@example.com", "password": "pw-" + name}}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        created = await client.post("/api/users", json=body)
    assert created.status_code == 201, created.text
    found = jwt.decode(created.json()["user"]["token"], server.jwt_secret, algorithms=["HS256"])
    yield int(found["sub"])
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": int(found["sub"])})


def signed(payload: bytes, secret: str, header: bytes = HEADER) -> str:
    """An HS256 JWT over exactly these bytes (PyJWT would re-encode the claims)."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_subject_past_64_bits_is_401_and_the_server_keeps_logging(
    server: Server,
) -> None:
    now = int(time.time())
    tokens = [
        jwt.encode({"sub": str(2**64), "exp": now + 60}, server.jwt_secret, algorithm="HS256"),
        signed(b'{"sub":%d,"exp":%d}' % (2**64, now + 60), server.jwt_secret),
        signed(b'{"sub":"%d","exp":%d}' % (2**63, now + 60), server.jwt_secret),
    ]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for token in tokens:
            for method, path in (("GET", "/api/user"), ("POST", "/api/articles")):
                response = await client.request(
                    method, path, json={}, headers={"Authorization": f"Token {token}"}
                )
                assert response.status_code == 401, (path, response.text)
        marker = f"after-{uuid.uuid4().hex}"
        later = await client.get("/api/tags", headers={"X-Request-ID": marker})
    assert later.status_code == 200
    log = server.wait_for_log(marker)
    assert "Traceback" not in log
    assert '"level":"error"' not in log


@dataclass(frozen=True)
class Case:
    token: str
    names_a_user: bool  # only such a token may pass: its sub is a user id in digits


async def test_fuzzed_claims_never_answer_5xx(server: Server, user_id: int) -> None:
    seed = int(os.environ.get("TOKEN_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)  # a failure names its seed: TOKEN_FUZZ_SEED=... reruns it
    cases = [_case(rng, server.jwt_secret, user_id) for _ in range(CASES)]
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for start in range(0, len(cases), CONCURRENCY):
            batch = cases[start : start + CONCURRENCY]
            answers = await asyncio.gather(
                *(_send(client, case, rng.randrange(3)) for case in batch)
            )
            for case, status in zip(batch, answers, strict=True):
                statuses[status] += 1
                if status in (DROPPED, *range(500, 600)) or (
                    status in (200, 422) and not case.names_a_user
                ):
                    failures.append(f"{status}: {_claims(case.token)!r}"[:300])
        marker = f"after-fuzz-{uuid.uuid4().hex}"
        later = await client.get("/api/tags", headers={"X-Request-ID": marker})
    assert not failures, f"seed {seed}, statuses {dict(statuses)}:\n" + "\n".join(failures[:20])
    assert statuses[401] > CASES // 2, (seed, statuses)
    assert statuses[200] + statuses[422] > 0, (seed, statuses)  # some tokens were good
    assert later.status_code == 200
    log = server.wait_for_log(marker)
    assert "Traceback" not in log, f"seed {seed}"


async def _send(client: httpx.AsyncClient, case: Case, route: int) -> int:
    """The token at the three places that read it: the user dependency, the optional viewer
    of a read, and the ASGI edge of a keyed write (idempotency and rate limits)."""
    headers = {"Authorization": f"Token {case.token}"}
    try:
        if route == 0:
            response = await client.get("/api/user", headers=headers)
        elif route == 1:
            response = await client.get("/api/articles?limit=1", headers=headers)
        else:
            headers["Idempotency-Key"] = uuid.uuid4().hex
            response = await client.post("/api/articles", json={}, headers=headers)
    except httpx.TransportError:
        return DROPPED
    return response.status_code


def _claims(token: str) -> bytes:
    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


def _case(rng: random.Random, secret: str, user_id: int) -> Case:
    now = int(time.time())
    good = {
        "sub": b'"%d"' % user_id,
        "exp": b"%d" % (now + 3600),
        "iat": b"%d" % now,
        "nbf": b"%d" % (now - 10),
    }
    members: list[bytes] = []
    for claim, value in good.items():
        roll = rng.random()
        if roll < 0.1 and claim in ("sub", "exp", "iat"):  # left out
            continue
        keep = roll < 0.5 or (claim == "nbf" and roll < 0.8)
        members.append(b'"%s":%s' % (claim.encode(), value if keep else _odd_value(rng, user_id)))
    if rng.random() < 0.05:  # a later duplicate wins in Python's json
        members.append(b'"sub":' + _odd_value(rng, user_id))
    payload = b"{" + b",".join(members) + b"}"
    if rng.random() < 0.03:
        payload = rng.choice([b"[]", b'"x"', b"1", b"null", b"{", b"\xff\xfe", b""])
    if len(payload) > MAX_PAYLOAD_BYTES:
        payload = b'{"sub":"%d"}' % (10**40)
    header = HEADER if rng.random() < 0.95 else _odd_header(rng)
    return Case(signed(payload, secret, header), header == HEADER and _names(payload))


def _names(payload: bytes) -> bool:
    """Whether the claims' sub names a possible user as make_token writes it: ASCII digits
    of an id in 1..2^63-1 (leading zeros allowed). Only such a token may pass."""
    try:
        sub = json.loads(payload)["sub"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return False
    if not (isinstance(sub, str) and sub.isascii() and sub.isdigit()):
        return False
    return len(sub) <= len(str(2**63)) and 0 < int(sub) < 2**63


FLOATS = (b"1.5", b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", b"1e-999", b"-0", b"1E3")
NUMERIC_STRINGS = ("", "0", "-1", " 1", "1 ", "1_0", "+1", "0x1", "1e3", "01", "1.0", "\x001")
UNICODE_DIGITS = ("\uff11", "\u0661", "\u00b2", "\u0661\u0662\u0663", "\U0001d7cf")


def _odd_value(rng: random.Random, user_id: int) -> bytes:
    """A claim value of some other type or size, as raw JSON."""
    kind = rng.randrange(6)
    if kind == 0:  # integers of every size, past Python's 4,300-digit limit too
        bits = rng.choice([1, 8, 31, 32, 53, 63, 64, 65, 128, 1500])
        number = rng.getrandbits(bits) * rng.choice([1, -1])
        return rng.choice([b"%d" % number, b"1" + b"0" * 5000, b"%d" % user_id, b"%d" % 2**63])
    if kind == 1:  # floats, and what Python's json reads as floats
        return rng.choice([*FLOATS, b"%d.0" % user_id, b"%r" % rng.uniform(-1e20, 1e20)])
    if kind == 2:  # strings that look like numbers
        near = [f"{user_id} ", f"0{user_id}", f"{user_id}\x00", str(2**63), str(2**64)]
        long = "9" * rng.randint(20, 4000)
        return orjson.dumps(rng.choice([*NUMERIC_STRINGS, *UNICODE_DIGITS, *near, long]))
    if kind == 3:  # strings of anything, lone surrogates included
        length = rng.choice([1, 10, 100, 3000])
        chars = "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(length))
        escaped = rng.choice([b'"\\ud800"', b'"\\udfff1"', b'"\\u0000"'])
        return rng.choice([orjson.dumps(chars), escaped])
    if kind == 4:  # containers
        depth = rng.choice([1, 2, 50, 1200])
        return rng.choice(
            [b"[]", b"{}", b"[%d]" % user_id, b'{"sub":"1"}', b"[" * depth + b"]" * depth]
        )
    return rng.choice([b"null", b"true", b"false"])


def _odd_header(rng: random.Random) -> bytes:
    return rng.choice(
        [
            b'{"alg":"none","typ":"JWT"}',
            b'{"alg":"HS512"}',
            b'{"alg":"HS256","kid":1e999}',
            b'{"alg":"HS256","crit":["exp"]}',
            b'{"alg":"HS256","typ":' + b"[" * 1200 + b"]" * 1200 + b"}",
            b'{"alg":["HS256"]}',
            b"[]",
        ]
    )


def test_signed_builds_what_pyjwt_verifies() -> None:
    token = signed(b'{"sub":"7","exp":%d}' % (time.time() + 60), "k" * 40)
    assert jwt.decode(token, "k" * 40, algorithms=["HS256"])["sub"] == "7"
