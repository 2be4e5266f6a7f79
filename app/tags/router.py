from fastapi import APIRouter

from app.dependencies import SessionDep
from app.tags import service as tags
from app.tags.schemas import TagsResponse

router = APIRouter(tags=["Tags"])


@router.get("/tags")
async def list_tags(session: SessionDep) -> TagsResponse:
    """Every tag ever used."""
    return TagsResponse(tags=await tags.list_tags(session))
