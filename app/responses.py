from starlette.responses import Response


class RawJSON(Response):
    """A JSON document that is already text (built by PostgreSQL): sent as is.

    Routes returning it declare `response_model=` so the OpenAPI document still shows the
    schema; tests validate these bodies against the same models."""

    media_type = "application/json"
