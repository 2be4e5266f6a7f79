"""All tables in one package: Conduit's tables form one graph, and Alembic imports this."""

from app.models.article import Article, ArticleSlug, Favorite, FavoriteCountShard, Tag
from app.models.comment import Comment
from app.models.counts import ArticleCountShard, TagCountShard, UserCountShard
from app.models.idempotency import IdempotencyKey
from app.models.jobs import (
    Import,
    ImportChunk,
    ImportLineError,
    OutboxEvent,
    Webhook,
    WebhookDelivery,
)
from app.models.user import Follow, User

__all__ = [
    "Article",
    "ArticleCountShard",
    "ArticleSlug",
    "Comment",
    "Favorite",
    "FavoriteCountShard",
    "Follow",
    "IdempotencyKey",
    "Import",
    "ImportChunk",
    "ImportLineError",
    "OutboxEvent",
    "Tag",
    "TagCountShard",
    "User",
    "UserCountShard",
    "Webhook",
    "WebhookDelivery",
]
