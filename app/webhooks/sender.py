"""One delivery attempt over HTTP: the signed JSON envelope, POSTed with httpx to the address
checked by `targets` (the URL's host goes in Host and, for https, in SNI)."""

import time

import httpx
import orjson

from app.errors import Invalid
from app.observability.context import REQUEST_ID_HEADER
from app.webhooks import signing, targets
from app.webhooks.service import Claimed, Outcome

USER_AGENT = "Conduit-Webhooks/1.0"
MAX_ERROR_CHARS = 500


def envelope(claimed: Claimed) -> bytes:
    """The body every receiver gets: `{"id", "type", "createdAt", "data"}`."""
    created = claimed.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps(
        {
            "id": claimed.event_id,
            "type": claimed.event_type,
            "createdAt": created,
            "data": claimed.payload,
        }
    )


async def send(
    client: httpx.AsyncClient, claimed: Claimed, allowed: list[targets.Network]
) -> Outcome:
    """POST the event; a 2xx is delivered, anything else (or no answer) is a failed attempt."""
    try:
        target = await targets.resolve(claimed.url, allowed)
    except Invalid as exc:
        return Outcome(ok=False, error=str(exc))
    body = envelope(claimed)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": _host_header(claimed.url),
        "X-Conduit-Event": claimed.event_type,
        "X-Conduit-Delivery": str(claimed.delivery_id),
        signing.TIMESTAMP_HEADER: str(timestamp),
        signing.SIGNATURE_HEADER: signing.sign(claimed.secret, timestamp, body),
    }
    if claimed.request_id:
        headers[REQUEST_ID_HEADER] = claimed.request_id
    pinned = httpx.URL(claimed.url).copy_with(host=target.address)
    try:
        async with client.stream(
            "POST", pinned, content=body, headers=headers, extensions={"sni_hostname": target.host}
        ) as response:
            if response.is_success:
                return Outcome(ok=True, status=response.status_code)
            return Outcome(
                ok=False,
                status=response.status_code,
                error=f"HTTP {response.status_code}: {await _start_of(response)}",
            )
    except httpx.HTTPError as exc:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])


async def _start_of(response: httpx.Response) -> str:
    """The first bytes of a failed response's body, for the delivery's last_error: a
    receiver's error page is never read whole."""
    start = b""
    async for chunk in response.aiter_raw():
        start += chunk
        if len(start) >= MAX_ERROR_CHARS:
            break
    return start[:MAX_ERROR_CHARS].decode(errors="replace")


def _host_header(url: str) -> str:
    parsed = httpx.URL(url)
    default = 443 if parsed.scheme == "https" else 80
    host = parsed.host if ":" not in parsed.host else f"[{parsed.host}]"
    return host if parsed.port in (None, default) else f"{host}:{parsed.port}"
