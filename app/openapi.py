"""Error responses for the OpenAPI document, so it shows the RealWorld error shape
for every status a route can answer (and FastAPI's own 422 schema never appears)."""

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    body: list[str]


class GenericErrorModel(BaseModel):
    errors: ErrorBody


_DESCRIPTIONS = {
    401: "Missing, malformed, forged, expired or revoked token",
    403: "Not allowed: not the author, following oneself, or a wrong current password",
    404: "Not found",
    408: "The upload stalled: no data within IMPORT_CHUNK_IDLE_S",
    409: "Username or email already taken",
    413: "Request body too large",
    422: "Invalid request",
    429: "Too many at once: retry after Retry-After seconds",
    503: "Busy: retry after Retry-After seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": GenericErrorModel, "description": _DESCRIPTIONS[code]} for code in codes
    }


# An old slug (app/articles/slugs.py) of a read that redirects: the article's own URL, or a
# URL below it (its comments).
MOVED: dict[int | str, dict[str, Any]] = {
    301: {
        "description": "An old slug (the title changed since): `Location` is the same URL "
        "with the article's slug now",
        "headers": {"Location": {"schema": {"type": "string"}}},
    }
}
