from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from app.schemas import Profile, Schema, Storable, Timestamp

Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Storable
]
Description = Annotated[str, StringConstraints(max_length=1000), Storable]
Body = Annotated[str, StringConstraints(min_length=1, max_length=100_000), Storable]
TagName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), Storable
]


class NewArticle(Schema):
    title: Title
    description: Description
    body: Body
    tag_list: list[TagName] = Field(default_factory=list, max_length=20)


class UpdateArticle(Schema):
    """Only the fields present change; the slug stays, so links keep working."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    title: Title | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    body: Body | SkipJsonSchema[None] = None


class NewArticleRequest(Schema):
    article: NewArticle


class UpdateArticleRequest(Schema):
    article: UpdateArticle


class ArticleSummary(Schema):
    """An article in a list: everything but the body."""

    slug: str
    title: str
    description: str
    tag_list: list[str]
    created_at: Timestamp
    updated_at: Timestamp
    favorited: bool
    favorites_count: int
    author: Profile


class Article(ArticleSummary):
    body: str


class SingleArticleResponse(Schema):
    article: Article


class MultipleArticlesResponse(Schema):
    articles: list[ArticleSummary]
    articles_count: int
