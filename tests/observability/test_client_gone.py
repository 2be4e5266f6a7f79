"""A request cancelled because its client went away is a 499 (nginx's code), not a 500:
nobody got an answer and the server did nothing wrong, so 5xx metrics and alerts stay honest."""

from collections.abc import MutableMapping
from typing import Any

import pytest
from fastapi import FastAPI

from app.middleware.request_edge import CLIENT_GONE, RequestEdge
from app.observability.routes import RouteTemplates

SCOPE = {"type": "http", "method": "GET", "path": "/api/articles", "headers": []}


async def _observe(inner: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    recorded: list[int] = []
    monkeypatch.setattr(
        RequestEdge, "_record", lambda _self, _scope, status, *_: recorded.append(status)
    )
    observe = RequestEdge(
        inner, deadline_s=5, max_in_flight=10, routes=RouteTemplates(FastAPI()), access_log=True
    )
    messages = iter([{"type": "http.request", "body": b""}, {"type": "http.disconnect"}])

    async def receive() -> Any:
        return next(messages)

    async def send(_message: MutableMapping[str, Any]) -> None:
        pass

    await observe(dict(SCOPE), receive, send)
    return recorded


async def test_client_gone_before_an_answer_is_499(monkeypatch: pytest.MonkeyPatch) -> None:
    async def cancelled_by_disconnect(_scope: Any, receive: Any, _send: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # the edge cancels the work: nothing is sent

    assert await _observe(cancelled_by_disconnect, monkeypatch) == [CLIENT_GONE]


async def test_an_answer_keeps_its_status_even_if_the_client_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def answers_500_then_hears_disconnect(_scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        while (await receive())["type"] != "http.disconnect":
            pass

    assert await _observe(answers_500_then_hears_disconnect, monkeypatch) == [500]


async def test_no_answer_without_a_disconnect_is_still_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def silent(_scope: Any, _receive: Any, _send: Any) -> None:
        pass

    assert await _observe(silent, monkeypatch) == [500]
