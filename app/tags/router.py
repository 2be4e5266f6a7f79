from typing import Annotated

from fastapi import APIRouter, Header, Response

from app.dependencies import StateDep
from app.responses import public_read
from app.tags import service as tags
from app.tags.schemas import TagsResponse

router = APIRouter(tags=["Tags"])


@router.get("/tags", response_model=TagsResponse)
async def list_tags(
    state: StateDep, if_none_match: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Response:
    """Every tag ever used."""
    document = await tags.list_tags(state.connect, state.cache)
    return public_read(document, if_none_match=if_none_match, personal=False)
