from typing import Annotated

from fastapi import APIRouter, Header, Response

from app.dependencies import StateDep
from app.responses import public_read
from app.state import AppState
from app.tags import service as tags
from app.tags.schemas import TagsResponse

router = APIRouter(tags=["Tags"])


@router.get("/tags", response_model=TagsResponse)
async def list_tags(
    state: StateDep, if_none_match: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Response:
    """Every tag ever used."""
    return await answer_tags(state, if_none_match=if_none_match)


async def answer_tags(state: AppState, *, if_none_match: str | None) -> Response:
    """The tags' answer, for this route and its plain case's own (app/hot_reads.py)."""
    document = await tags.list_tags(state.connect, state.cache)
    return public_read(document, if_none_match=if_none_match, personal=False)
