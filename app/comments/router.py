from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.comments import service as comments
from app.comments.schemas import MultipleCommentsResponse, NewCommentRequest, SingleCommentResponse
from app.dependencies import (
    OPTIONAL_AUTH,
    CacheDep,
    ConnectDep,
    CurrentUser,
    MaybeViewerId,
    SessionDep,
    Slug,
)
from app.openapi import error_responses
from app.responses import RawJSON

router = APIRouter(prefix="/articles/{slug}/comments", tags=["Comments"])
CommentId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get(
    "",
    response_model=MultipleCommentsResponse,
    responses=error_responses(401, 404),
    openapi_extra=OPTIONAL_AUTH,
)
async def list_comments(
    slug: Slug, viewer_id: MaybeViewerId, connect: ConnectDep, cache: CacheDep
) -> RawJSON:
    """All comments on an article."""
    return RawJSON(await comments.list_comments(connect, cache, slug=slug, viewer_id=viewer_id))


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
