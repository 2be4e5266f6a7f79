import orjson
from sqlalchemy import Select, select

from app.cache import versions
from app.cache.store import Cache
from app.db import Connect
from app.models import Tag


async def list_tags(connect: Connect, cache: Cache) -> str:
    """`{"tags": [...]}`: every tag ever used, alphabetically, through the shared cache."""

    async def load() -> str:
        async with connect() as db:
            names = [name for (name,) in await db.all(_NAMES)]
        # The shape of TagsResponse (the route's response_model), without building the model:
        # the names are the column's, strings already.
        return orjson.dumps({"tags": names}).decode()

    document = await cache.get_or_load("tags", "tags", [versions.TAGS], load)
    assert document is not None  # noqa: S101 - the loader always returns a document
    return document


# Built once: reads run on the driver, which compiles each statement object once.
_NAMES: Select[str] = select(Tag.name).order_by(Tag.name)
