"""Streamed uploads at the request edge: no deadline, but they still die with their client,
and the body is read only as the app asks for it."""

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.errors import RequestTimeout
from app.middleware.request_edge import RequestEdge
from app.middleware.uploads import paced

IMPORTS = {"/api/imports": 10**9}  # path: its body limit
UPLOAD: Scope = {"type": "http", "method": "POST", "path": "/api/imports", "headers": []}


class Client:
    """The server's side of one request: body pieces on demand, then a disconnect."""

    def __init__(self, pieces: int, *, gap_s: float = 0.0, hang_up: bool = False) -> None:
        self.pieces, self.gap_s, self.hang_up = pieces, gap_s, hang_up
        self.sent = 0
        self.responses: list[Message] = []

    async def receive(self) -> Message:
        if self.sent < self.pieces:
            await asyncio.sleep(self.gap_s)
            self.sent += 1
            more = self.sent < self.pieces or self.hang_up
            return {"type": "http.request", "body": b"x\n", "more_body": more}
        if not self.hang_up:
            await asyncio.Event().wait()  # a client that waits for its answer
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.responses.append(message)


async def _answer(send: Send) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_an_upload_has_no_deadline():
    async def app(_: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await _answer(send)

    client = Client(pieces=6, gap_s=0.1)
    lifetime = RequestEdge(app, deadline_s=0.2, max_in_flight=10, streamed=IMPORTS)
    await lifetime(UPLOAD, client.receive, client.send)
    assert client.responses[0]["status"] == 202
    # Any other request keeps the deadline.
    other = Client(pieces=6, gap_s=0.1)
    await lifetime({**UPLOAD, "path": "/api/articles"}, other.receive, other.send)
    assert other.responses[0]["status"] == 504


async def test_an_upload_still_dies_with_its_client():
    cancelled = asyncio.Event()

    async def app(_: Scope, receive: Receive, __: Send) -> None:
        try:
            while True:
                await receive()
                await asyncio.sleep(0.05)  # slower than the client
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client = Client(pieces=50, hang_up=True)
    lifetime = RequestEdge(app, deadline_s=0.2, max_in_flight=10, streamed=IMPORTS)
    await asyncio.wait_for(lifetime(UPLOAD, client.receive, client.send), timeout=10)
    assert cancelled.is_set()
    assert client.responses == []  # nobody to answer


async def test_an_upload_is_read_only_as_the_app_asks():
    taken = 0
    ahead: list[int] = []
    client = Client(pieces=40)

    async def app(_: Scope, receive: Receive, send: Send) -> None:
        nonlocal taken
        while True:
            await asyncio.sleep(0.01)
            ahead.append(client.sent - taken)
            message = await receive()
            taken += 1
            if not message.get("more_body"):
                break
        await _answer(send)

    lifetime = RequestEdge(app, deadline_s=0.2, max_in_flight=10, streamed=IMPORTS)
    await lifetime(UPLOAD, client.receive, client.send)
    assert max(ahead) == 0  # passed through, never read ahead into this process's memory


async def test_paced_raises_408_when_the_body_stalls():
    client = Client(pieces=3, gap_s=0.3)
    receive = paced(client.receive, idle_s=0.5)
    assert (await receive())["body"] == b"x\n"
    stalled = paced(Client(pieces=3, gap_s=1.0).receive, idle_s=0.2)
    with pytest.raises(RequestTimeout):
        await stalled()
