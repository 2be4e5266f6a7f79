from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Tag


async def list_tags(session: AsyncSession) -> list[str]:
    """Every tag ever used, alphabetically."""
    return list(await session.scalars(select(Tag.name).order_by(Tag.name)))
