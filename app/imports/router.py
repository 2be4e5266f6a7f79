"""Bulk import of articles: NDJSON in, 202 at once, the worker does the rest."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response

from app.dependencies import CurrentUser, PageDep, SessionDep, SettingsDep, ViewerId
from app.imports import service as imports
from app.imports.schemas import ImportResponse, LineErrorsResponse
from app.openapi import error_responses

router = APIRouter(prefix="/imports", tags=["Imports"])
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]

NDJSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": 'One article per line: `{"title", "description", "body", '
        '"tagList"}` (or `{"article": {...}}`). At most IMPORT_MAX_LINES lines (blank '
        "ones included) and IMPORT_MAX_BYTES bytes.",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    }
}


@router.post(
    "",
    status_code=202,
    responses=error_responses(401, 408, 409, 413, 429, 503),
    openapi_extra=NDJSON_BODY,
)
async def create_import(
    request: Request,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> ImportResponse:
    """Import articles as the current user; answers at once, the worker imports them. The
    same Idempotency-Key with the same body answers the import it started (another body:
    422). One upload per user at a time (429); each piece of the body within
    IMPORT_CHUNK_IDLE_S of the one before (408)."""
    limits = imports.Limits(
        max_lines=settings.import_max_lines, batch_lines=settings.import_batch_lines
    )
    status, created = await imports.create(
        session,
        user_id=user.id,
        body=request.stream(),
        limits=limits,
        client_key=idempotency_key,
    )
    response.headers["Location"] = f"/api/imports/{status.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return ImportResponse(import_=status)


@router.get("/{import_id}", responses=error_responses(401, 404))
async def get_import(import_id: Id, viewer_id: ViewerId, session: SessionDep) -> ImportResponse:
    """State, progress, counts and the first per-line errors of one's own import."""
    status = await imports.get(session, import_id=import_id, user_id=viewer_id)
    return ImportResponse(import_=status)


@router.get("/{import_id}/errors", responses=error_responses(401, 404))
async def list_line_errors(
    import_id: Id, viewer_id: ViewerId, session: SessionDep, page: PageDep
) -> LineErrorsResponse:
    """Every line of the import that was not imported, with the reason, by line number."""
    errors, count = await imports.line_errors(
        session, import_id=import_id, user_id=viewer_id, limit=page.limit, offset=page.offset
    )
    return LineErrorsResponse(errors=errors, errors_count=count)
