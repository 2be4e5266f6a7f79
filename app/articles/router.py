"""Article routes. Bodies are JSON text built by PostgreSQL (`RawJSON`); `response_model`
keeps their schema in the OpenAPI document."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.types import Scope

from app.articles import fields
from app.articles import service as articles
from app.articles.schemas import (
    MultipleArticlesResponse,
    NewArticleRequest,
    SelectedArticleResponse,
    SelectedArticlesResponse,
    SingleArticleResponse,
    UpdateArticleRequest,
)
from app.dependencies import (
    OPTIONAL_AUTH,
    CurrentUser,
    Filter,
    ListPage,
    ListPageDep,
    Reads,
    ReadsDep,
    SessionDep,
    Slug,
    StateDep,
    ViewerId,
)
from app.openapi import MOVED, error_responses
from app.responses import RawJSON, moved
from app.schemas import Storable
from app.state import AppState

router = APIRouter(prefix="/articles", tags=["Articles", "Favorites"])
_LIST = MultipleArticlesResponse
_ONE = SingleArticleResponse
# Reads that take `fields=`: the full shape, or the fields asked for.
_LIST_READ = MultipleArticlesResponse | SelectedArticlesResponse
_ONE_READ = SingleArticleResponse | SelectedArticleResponse


def _fields(names: tuple[str, ...]) -> Any:
    # The pattern is documented, not enforced by FastAPI: the service's check refuses the
    # same values with a message that names the fields there are.
    extra = {"pattern": fields.pattern(names)}
    return Query(max_length=500, description=fields.DESCRIPTION, json_schema_extra=extra)


SummaryFields = Annotated[str | None, _fields(fields.SUMMARY_FIELDS)]
ArticleFields = Annotated[str | None, _fields(fields.ARTICLE_FIELDS)]
Search = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Full-text search over title, description and body (English stems; "
        '`"a phrase"`, `or`, `-word` as in web search). Title matches come first, then '
        "the others, newest first within each; combines with the filters and both ways "
        "of paging.",
    ),
    Storable,
]


@router.get(
    "", response_model=_LIST_READ, responses=error_responses(401), openapi_extra=OPTIONAL_AUTH
)
async def list_articles(
    reads: ReadsDep,
    page: ListPageDep,
    tag: Filter = None,
    author: Filter = None,
    favorited: Filter = None,
    q: Search = None,
    fields: SummaryFields = None,
) -> Response:
    """Most recent articles, optionally by tag, author, the user who favorited them, or
    words (`q`); page by `offset` or by `cursor`."""
    return await answer_list(
        reads, page, tag=tag, author=author, favorited=favorited, q=q, fields=fields
    )


async def answer_list(
    reads: Reads,
    page: ListPage,
    *,
    tag: str | None = None,
    author: str | None = None,
    favorited: str | None = None,
    q: str | None = None,
    fields: str | None = None,
) -> Response:
    """The list's answer, for this route and its plain case's own (app/hot_reads.py)."""
    document = await articles.list_articles(
        reads.connect,
        reads.cache,
        viewer_id=reads.viewer_id,
        tag=tag,
        author=author,
        favorited_by=favorited,
        q=q,
        limit=page.limit,
        offset=page.offset,
        cursor=page.cursor,
        cursor_key=page.cursor_key,
        only=fields,
    )
    return reads.answer(document)


@router.get("/feed", response_model=_LIST_READ, responses=error_responses(401))
async def feed(
    viewer_id: ViewerId, state: StateDep, page: ListPageDep, fields: SummaryFields = None
) -> RawJSON:
    """Most recent articles by the authors the current user follows."""
    return await answer_feed(state, page, viewer_id=viewer_id, fields=fields)


async def answer_feed(
    state: AppState, page: ListPage, *, viewer_id: int, fields: str | None = None
) -> RawJSON:
    """The feed's answer, for this route and its plain case's own (app/hot_reads.py)."""
    document = await articles.feed(
        state.connect,
        viewer_id=viewer_id,
        limit=page.limit,
        offset=page.offset,
        cursor=page.cursor,
        cursor_key=page.cursor_key,
        only=fields,
    )
    return RawJSON(document)


@router.post("", status_code=201, response_model=_ONE, responses=error_responses(401))
async def create_article(
    body: NewArticleRequest, user: CurrentUser, session: SessionDep
) -> RawJSON:
    """Publish an article as the current user."""
    return RawJSON(await articles.create(session, author=user, data=body.article), status_code=201)


@router.get(
    "/{slug}",
    response_model=_ONE_READ,
    responses=error_responses(401, 404) | MOVED,
    openapi_extra=OPTIONAL_AUTH,
)
async def get_article(
    slug: Slug, reads: ReadsDep, request: Request, fields: ArticleFields = None
) -> Response:
    """One article, with its body; an old slug answers 301 with the current URL."""
    return await answer_article(reads, request.scope, slug=slug, fields=fields)


async def answer_article(
    reads: Reads, scope: Scope, *, slug: str, fields: str | None = None
) -> Response:
    """One article's answer, for this route and its plain case's own (app/hot_reads.py)."""
    document = await articles.get_cached(
        reads.connect, reads.cache, slug=slug, viewer_id=reads.viewer_id, only=fields
    )
    if isinstance(document, articles.Moved):
        return moved(scope, document.slug)
    return reads.answer(document)


@router.put("/{slug}", response_model=_ONE, responses=error_responses(401, 403, 404))
async def update_article(
    slug: Slug, body: UpdateArticleRequest, user: CurrentUser, session: SessionDep
) -> RawJSON:
    """Change the title, description or body of one's own article."""
    changes = body.article.model_dump(exclude_unset=True, by_alias=False)
    return RawJSON(await articles.update_article(session, slug=slug, user=user, changes=changes))


@router.delete("/{slug}", status_code=204, responses=error_responses(401, 403, 404))
async def delete_article(slug: Slug, user: CurrentUser, session: SessionDep) -> Response:
    """Delete one's own article."""
    await articles.delete_article(session, slug=slug, user=user)
    return Response(status_code=204)


@router.post("/{slug}/favorite", response_model=_ONE, responses=error_responses(401, 404))
async def favorite(slug: Slug, user: CurrentUser, session: SessionDep) -> RawJSON:
    """Favorite an article."""
    return RawJSON(await articles.favorite(session, slug=slug, user=user))


@router.delete("/{slug}/favorite", response_model=_ONE, responses=error_responses(401, 404))
async def unfavorite(slug: Slug, user: CurrentUser, session: SessionDep) -> RawJSON:
    """Remove a favorite."""
    return RawJSON(await articles.unfavorite(session, slug=slug, user=user))
