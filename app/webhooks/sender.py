"""One delivery attempt over HTTP: the signed JSON envelope, POSTed with httpx to the address
checked by `targets` (the URL's host goes in Host and, for https, in SNI).

`send` never raises: whatever goes wrong (a URL stored before today's checks, a refused
target, a receiver that never answers, a bug) is a failed attempt with its error, recorded
and retried with backoff until the dead letter. An exception escaping here would leave the
delivery leased and pending, to be picked up by the relay again and again."""

import asyncio
import logging
import time

import httpx
import orjson

from app.errors import Invalid
from app.observability.context import REQUEST_ID_HEADER
from app.webhooks import signing, targets
from app.webhooks.attempts import Claimed, Outcome

log = logging.getLogger("conduit.webhooks")

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
    client: httpx.AsyncClient, claimed: Claimed, rules: targets.Policy, *, deadline_s: float
) -> Outcome:
    """POST the event; a 2xx is delivered, anything else (or no answer within `deadline_s`,
    resolution included) is a failed attempt."""
    try:
        async with asyncio.timeout(deadline_s):
            return await _attempt(client, claimed, rules)
    except Invalid as exc:
        return Outcome(ok=False, error=_error(str(exc)))
    except TimeoutError:
        return Outcome(ok=False, error=f"no answer within {deadline_s:g} s")
    except httpx.HTTPError as exc:
        return _failed(exc)
    except Exception as exc:
        log.warning("webhook delivery %d failed unexpectedly", claimed.delivery_id, exc_info=True)
        return _failed(exc)


async def _attempt(client: httpx.AsyncClient, claimed: Claimed, rules: targets.Policy) -> Outcome:
    target = await targets.resolve(claimed.url, rules)
    body = envelope(claimed)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": target.url.host_header,
        "X-Conduit-Event": claimed.event_type,
        "X-Conduit-Delivery": str(claimed.delivery_id),
        signing.TIMESTAMP_HEADER: str(timestamp),
        signing.SIGNATURE_HEADER: signing.sign(claimed.secret, timestamp, body),
    }
    if claimed.request_id:
        headers[REQUEST_ID_HEADER] = claimed.request_id
    pinned = httpx.URL(target.url.url).copy_with(host=target.address)
    async with client.stream(
        "POST", pinned, content=body, headers=headers, extensions={"sni_hostname": target.url.host}
    ) as response:
        if response.is_success:
            return Outcome(ok=True, status=response.status_code)
        return Outcome(
            ok=False,
            status=response.status_code,
            error=_error(f"HTTP {response.status_code}: {await _start_of(response)}"),
        )


def _failed(exc: Exception) -> Outcome:
    return Outcome(ok=False, error=_error(f"{type(exc).__name__}: {exc}"))


def _error(text: str) -> str:
    """Storable in a text column: PostgreSQL takes neither NUL nor a lone surrogate (a
    receiver's error page can hold both), and a failed UPDATE would leave the attempt
    unrecorded."""
    text = text[:MAX_ERROR_CHARS].replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


async def _start_of(response: httpx.Response) -> str:
    """The first bytes of a failed response's body, for the delivery's last_error: a
    receiver's error page is never read whole."""
    start = b""
    async for chunk in response.aiter_raw():
        start += chunk
        if len(start) >= MAX_ERROR_CHARS:
            break
    return start[:MAX_ERROR_CHARS].decode(errors="replace")
