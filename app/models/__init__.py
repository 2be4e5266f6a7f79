"""All tables in one package: Conduit's tables form one graph, and Alembic imports this."""

from app.models.article import Article, Favorite, Tag
from app.models.comment import Comment
from app.models.user import Follow, User

__all__ = ["Article", "Comment", "Favorite", "Follow", "Tag", "User"]
