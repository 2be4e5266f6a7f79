from fastapi import APIRouter, Response

from app.dependencies import (
    OPTIONAL_AUTH,
    CurrentUser,
    Reads,
    ReadsDep,
    SessionDep,
    Username,
)
from app.openapi import error_responses
from app.profiles import service as profiles
from app.profiles.schemas import ProfileResponse

router = APIRouter(prefix="/profiles/{username}", tags=["Profile"])


@router.get(
    "",
    response_model=ProfileResponse,
    responses=error_responses(401, 404),
    openapi_extra=OPTIONAL_AUTH,
)
async def get_profile(username: Username, reads: ReadsDep) -> Response:
    """A user's public profile."""
    return await answer_profile(reads, username=username)


async def answer_profile(reads: Reads, *, username: str) -> Response:
    """A profile's answer, for this route and its plain case's own (app/hot_reads.py)."""
    document = await profiles.get(
        reads.connect, reads.cache, username=username, viewer_id=reads.viewer_id
    )
    return reads.answer(document)


@router.post("/follow", responses=error_responses(401, 403, 404))
async def follow(username: Username, user: CurrentUser, session: SessionDep) -> ProfileResponse:
    """Follow a user."""
    return ProfileResponse(profile=await profiles.follow(session, follower=user, username=username))


@router.delete("/follow", responses=error_responses(401, 404))
async def unfollow(username: Username, user: CurrentUser, session: SessionDep) -> ProfileResponse:
    """Unfollow a user."""
    return ProfileResponse(
        profile=await profiles.unfollow(session, follower=user, username=username)
    )
