"""CORS: Starlette's, outermost, so every response (errors included) is decorated."""

from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

_VARY_ORIGIN = (b"vary", b"Origin")


class Cors(CORSMiddleware):
    """Starlette's CORS, with a fast path for requests without `Origin` (servers, curl, load
    tests: most API traffic). They need no CORS headers, only `Vary: Origin` so that a shared
    cache keeps them apart from a browser's; Starlette parses the headers and rebuilds the
    response's to find that out (its cost: bench/README.md, "Latest figures")."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            await super().__call__(scope, receive, send)
            return

        async def send_varying(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _VARY_ORIGIN]}
            await send(message)

        await self.app(scope, receive, send_varying)
