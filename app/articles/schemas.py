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
    """Only the fields present change. A new title gives a new slug; the old one keeps
    leading to the article (GET: 301 to the new URL; writes act on the article)."""

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
    articles_count: int = Field(
        description="How many articles match in all (a search counts up to 1000: "
        "then `articlesCountExact` is false)"
    )
    articles_count_exact: bool | SkipJsonSchema[None] = Field(
        default=None, description="Searches (`q`) only: false when the count stopped at 1000"
    )
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next page; null on the last page",
    )


class ProfileFields(Schema):
    """A profile with only the fields `fields=author.…` asked for."""

    username: str | SkipJsonSchema[None] = None
    bio: str | SkipJsonSchema[None] = None
    image: str | None = None
    following: bool | SkipJsonSchema[None] = None


class ArticleFields(Schema):
    """An article with only the fields `fields=` asked for."""

    slug: str | SkipJsonSchema[None] = None
    title: str | SkipJsonSchema[None] = None
    description: str | SkipJsonSchema[None] = None
    body: str | SkipJsonSchema[None] = None
    tag_list: list[str] | SkipJsonSchema[None] = None
    created_at: Timestamp | SkipJsonSchema[None] = None
    updated_at: Timestamp | SkipJsonSchema[None] = None
    favorited: bool | SkipJsonSchema[None] = None
    favorites_count: int | SkipJsonSchema[None] = None
    author: ProfileFields | SkipJsonSchema[None] = None


class SelectedArticleResponse(Schema):
    """`GET /articles/{slug}?fields=…`: the article with only the fields asked for."""

    article: ArticleFields


class SelectedArticlesResponse(Schema):
    """A list with `fields=…`: each article with only the fields asked for."""

    articles: list[ArticleFields]
    articles_count: int
    articles_count_exact: bool | SkipJsonSchema[None] = None
    next_cursor: str | None = None
