"""`articlesCount` of each list from the counters: a sum over at most SHARDS index entries
(the feed: SHARDS per followed author), never a scan of the matching articles."""

from sqlalchemy import ColumnElement, ScalarSelect, func, select

from app.models import ArticleCountShard, Follow, TagCountShard, UserCountShard


def everything() -> ScalarSelect[int]:
    return select(func.coalesce(func.sum(ArticleCountShard.articles), 0)).scalar_subquery()


def tagged(tag: ColumnElement[str]) -> ScalarSelect[int]:
    total = func.coalesce(func.sum(TagCountShard.articles), 0)
    return select(total).where(TagCountShard.tag == tag).scalar_subquery()


def written_by(user_id: ColumnElement[int]) -> ScalarSelect[int]:
    total = func.coalesce(func.sum(UserCountShard.articles), 0)
    return select(total).where(UserCountShard.user_id == user_id).scalar_subquery()


def favorited_by(user_id: ColumnElement[int]) -> ScalarSelect[int]:
    total = func.coalesce(func.sum(UserCountShard.favorites), 0)
    return select(total).where(UserCountShard.user_id == user_id).scalar_subquery()


def followed_by(follower_id: ColumnElement[int]) -> ScalarSelect[int]:
    """The feed: the followed authors' counters summed, O(followees), through the primary
    key of `follows` and that of the counters."""
    total = func.coalesce(func.sum(UserCountShard.articles), 0)
    return (
        select(total)
        .join_from(Follow, UserCountShard, UserCountShard.user_id == Follow.followee_id)
        .where(Follow.follower_id == follower_id)
        .scalar_subquery()
    )
