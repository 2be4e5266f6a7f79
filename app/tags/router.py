from fastapi import APIRouter

from app.dependencies import StateDep
from app.responses import RawJSON
from app.tags import service as tags
from app.tags.schemas import TagsResponse

router = APIRouter(tags=["Tags"])


@router.get("/tags", response_model=TagsResponse)
async def list_tags(state: StateDep) -> RawJSON:
    """Every tag ever used."""
    return RawJSON(await tags.list_tags(state.connect, state.cache))
