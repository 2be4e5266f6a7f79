"""Request ids in and out, one JSON access line per request, ids carried into jobs."""

import logging
import sys
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.observability import context, logs
from app.observability.logs import JsonFormatter, configure_logging
from tests.conftest import ROOT


def written(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The JSON lines written to stderr since the last call (the handler batches them)."""
    logs.flush()
    return [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "conduit.access"]


async def test_one_json_line_per_request(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    written(capsys)
    response = await client.get("/articles/missing-slug", headers={"X-Request-ID": "req-1"})
    (line,) = access_lines(written(capsys))
    assert response.headers["x-request-id"] == "req-1"
    assert line["request_id"] == "req-1"
    assert line["level"] == "info"
    assert line["msg"] == "request"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/api/articles/{slug}", 404)
    assert isinstance(line["duration_ms"], float)
    assert str(line["ts"]).endswith("Z")
    assert "user_id" not in line


@pytest.mark.parametrize(
    "sent",
    [None, "", "x" * 129, "has space", "semi;colon", "ünïcode"],
)
async def test_malformed_or_missing_request_ids_are_replaced(
    client: httpx.AsyncClient, sent: str | None
) -> None:
    headers = {} if sent is None else {b"X-Request-ID": sent.encode()}
    response = await client.get("/tags", headers=headers)
    minted = response.headers["x-request-id"]
    assert minted != sent
    assert len(minted) == 32
    assert int(minted, 16) >= 0


async def test_well_formed_request_ids_round_trip(client: httpx.AsyncClient) -> None:
    for sent in ("a", "A-b_c.d:e", "9" * 128):
        response = await client.get("/tags", headers={"X-Request-ID": sent})
        assert response.headers["x-request-id"] == sent


async def test_user_id_joins_the_line_once_known(
    app: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    async def whoami() -> dict[str, str]:
        context.set_user_id(42)  # what the token dependency does
        logging.getLogger("conduit.test").warning("inside")
        return {}

    app.add_api_route("/api/whoami", whoami)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
        written(capsys)
        response = await client.get("/api/whoami")
    lines = written(capsys)
    inside, access = lines[-2], lines[-1]
    request_id = response.headers["x-request-id"]
    assert inside == inside | {"msg": "inside", "level": "warning", "request_id": request_id}
    assert inside["user_id"] == 42
    assert access["user_id"] == 42
    assert access["route"] == "/api/whoami"


def test_jobs_and_webhooks_carry_the_request_id() -> None:
    assert context.request_id_headers() == {}
    assert context.job_fields() == {}
    with context.bound("from-request-7") as bound:
        assert bound.request_id == "from-request-7"
        assert context.request_id_headers() == {"X-Request-ID": "from-request-7"}
        assert context.job_fields() == {"request_id": "from-request-7"}
    with context.bound(None) as fresh:
        assert len(fresh.request_id) == 32
    assert context.current_request_id() is None


def test_log_level_comes_from_settings(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("conduit.test")
    try:
        configure_logging("WARNING")
        logger.info("hidden")
        logger.warning("shown")
        configure_logging("DEBUG")
        logger.debug("debug shown")
    finally:
        configure_logging("INFO")
    assert [line["msg"] for line in written(capsys) if line["logger"] == "conduit.test"] == [
        "shown",
        "debug shown",
    ]
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        configure_logging("chatty")


def test_exceptions_are_one_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord(
            "conduit", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert parsed["msg"] == "failed"
    assert "ValueError: bad" in parsed["exc"]
