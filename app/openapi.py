"""Error responses for the OpenAPI document, so it shows the RealWorld error shape
for every status a route can answer (and FastAPI's own 422 schema never appears)."""

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    body: list[str]


class GenericErrorModel(BaseModel):
    errors: ErrorBody


_DESCRIPTIONS = {
    401: "Missing, malformed, forged or expired token",
    403: "Not allowed: not the author, or following oneself",
    404: "Not found",
    409: "Username or email already taken",
    413: "Request body too large",
    422: "Invalid request",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": GenericErrorModel, "description": _DESCRIPTIONS[code]} for code in codes
    }
