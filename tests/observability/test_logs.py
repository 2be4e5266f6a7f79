"""Request ids in and out, one JSON access line per request, ids carried into jobs."""

import logging
import sys
import time
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


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


def test_unserialisable_records_are_written_in_a_fallback_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    logger = logging.getLogger("conduit.test")
    nested: list[object] = []
    for _ in range(300):  # orjson stops at 254 levels
        nested = [nested]
    fields = {
        "big": 2**64,
        "huge": 10**5000,  # past Python's own int -> str limit
        "surrogate": "\udc80",
        "bytes": b"\xff",
        "keys": {1: "one", (2, 3): "pair"},
        "object": Unprintable(),
        "nested": nested,
    }
    written(capsys)
    logger.warning("odd %s", "\udcff", extra={logs.FIELDS: fields})
    logger.warning("after")
    odd, after = [line for line in written(capsys) if line["logger"] == "conduit.test"]
    assert odd["msg"] == "odd \\udcff"
    assert odd["big"] == str(2**64)
    assert odd["huge"] == hex(10**5000)
    assert odd["surrogate"] == "\\udc80"
    assert odd["bytes"] == "b'\\xff'"
    assert odd["keys"] == {"1": "one", "(2, 3)": "pair"}
    assert odd["object"] == "<unprintable Unprintable>"
    assert "nested too deep" in orjson.dumps(odd["nested"]).decode()
    assert after["msg"] == "after"
    # pytest's own log handler raises on this one, so it goes to the formatter alone
    record = logging.LogRecord("conduit", logging.INFO, __file__, 1, "n=%d", ("x",), None)
    bad = orjson.loads(JsonFormatter().format(record))
    assert bad["msg"] == "unformattable log record (TypeError)"
    assert bad["template"] == "n=%d"


def test_the_writer_thread_survives_what_it_cannot_write(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging("INFO")
    handler = logs._handler
    assert handler is not None
    written(capsys)
    real = logs._access_json

    def failing_once(entry: logs.AccessEntry) -> str:
        if entry[3] == "/boom":
            raise RuntimeError("writer failure")
        return real(entry)

    monkeypatch.setattr(logs, "_access_json", failing_once)
    # Left to the flusher thread (INFO lines wait for it): a subject past 64 bits, a lone
    # surrogate, then a batch that raises whatever it holds.
    handler.add_access(
        (time.time(), {"user_id": 2**64, "request_id": "\udc80"}, "GET", "/a", 401, 1.0)
    )
    output = _flushed_by_the_thread(capsys, "/a")
    handler.add_access((time.time(), {}, "GET", "/boom", 200, 1.0))
    time.sleep(3 * handler.FLUSH_INTERVAL_S)
    handler.add_access((time.time(), {}, "GET", "/after", 200, 1.0))
    output += _flushed_by_the_thread(capsys, "/after")
    assert handler._flusher.is_alive()
    lines = [orjson.loads(line) for line in output.splitlines()]
    first = next(line for line in lines if line.get("route") == "/a")
    assert (first["user_id"], first["request_id"]) == (str(2**64), "\\udc80")


def _flushed_by_the_thread(capsys: pytest.CaptureFixture[str], route: str) -> str:
    """What the flusher thread writes until a line of `route` appears (no flush() here)."""
    output = ""
    deadline = time.monotonic() + 10 * logs.BufferedStderrHandler.FLUSH_INTERVAL_S
    while f'"route":"{route}"' not in output:
        assert time.monotonic() < deadline, f"no line for {route} written: {output!r}"
        time.sleep(0.05)
        output += capsys.readouterr().err
    return output
