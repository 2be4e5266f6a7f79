"""Plain async factories: rows straight into the test's transaction, no HTTP round trip."""

from itertools import count
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Article, Comment, Favorite, Follow, User

_counter = count(1)


async def make_user(session: AsyncSession, **overrides: Any) -> User:
    n = next(_counter)
    fields = {
        "username": f"user{n}",
        "email": f"user{n}@example.com",
        "password_hash": "not-a-real-hash",
    } | overrides
    user = User(**fields)
    session.add(user)
    await session.flush()
    await session.refresh(user)
    return user


async def make_article(session: AsyncSession, author: User, **overrides: Any) -> Article:
    n = next(_counter)
    fields = {
        "title": f"Title {n}",
        "slug": f"title-{n}",
        "description": "d",
        "body": "b",
        "tag_list": [],
    } | overrides
    article = Article(author_id=author.id, **fields)
    session.add(article)
    await session.flush()
    await session.refresh(article)
    return article


async def make_comment(
    session: AsyncSession, article: Article, author: User, body: str = "c"
) -> Comment:
    comment = Comment(article_id=article.id, author_id=author.id, body=body)
    session.add(comment)
    await session.flush()
    return comment


async def favorite(session: AsyncSession, user: User, article: Article) -> None:
    session.add(Favorite(user_id=user.id, article_id=article.id))
    article.favorites_count += 1
    await session.flush()


async def follow(session: AsyncSession, follower: User, followee: User) -> None:
    session.add(Follow(follower_id=follower.id, followee_id=followee.id))
    await session.flush()
