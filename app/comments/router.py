from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from starlette.types import Scope

from app.comments import service as comments
from app.comments.schemas import MultipleCommentsResponse, NewCommentRequest, SingleCommentResponse
from app.dependencies import (
    OPTIONAL_AUTH,
    CurrentUser,
    Reads,
    ReadsDep,
    SessionDep,
    Slug,
)
from app.openapi import MOVED, error_responses
from app.responses import moved

router = APIRouter(prefix="/articles/{slug}/comments", tags=["Comments"])
CommentId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get(
    "",
    response_model=MultipleCommentsResponse,
    responses=error_responses(401, 404) | MOVED,
    openapi_extra=OPTIONAL_AUTH,
)
async def list_comments(slug: Slug, reads: ReadsDep, request: Request) -> Response:
    """All comments on an article; an old slug answers 301 with the current URL."""
    return await answer_comments(reads, request.scope, slug=slug)


async def answer_comments(reads: Reads, scope: Scope, *, slug: str) -> Response:
    """The comments' answer, for this route and its plain case's own (app/hot_reads.py)."""
    document = await comments.list_comments(
        reads.connect, reads.cache, slug=slug, viewer_id=reads.viewer_id
    )
    if isinstance(document, str):
        return reads.answer(document)
    return moved(scope, document.slug, tail="/comments")


@router.post("", responses=error_responses(401, 404))
async def add_comment(
    slug: Slug, body: NewCommentRequest, user: CurrentUser, session: SessionDep
) -> SingleCommentResponse:
    """Comment on an article."""
    comment = await comments.add(session, slug=slug, author=user, body=body.comment.body)
    return SingleCommentResponse(comment=comment)


@router.delete(
    "/{comment_id}",
    status_code=204,
    responses=error_responses(401, 403, 404),
)
async def delete_comment(
    slug: Slug, comment_id: CommentId, user: CurrentUser, session: SessionDep
) -> Response:
    """Delete one's own comment."""
    await comments.remove(session, slug=slug, comment_id=comment_id, user=user)
    return Response(status_code=204)
