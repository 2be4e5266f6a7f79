"""Article routes. Bodies are JSON text built by PostgreSQL (`RawJSON`); `response_model`
keeps their schema in the OpenAPI document."""

from fastapi import APIRouter, Response

from app.articles import service as articles
from app.articles.schemas import (
    MultipleArticlesResponse,
    NewArticleRequest,
    SingleArticleResponse,
    UpdateArticleRequest,
)
from app.dependencies import (
    OPTIONAL_AUTH,
    CurrentUser,
    Filter,
    PageDep,
    ReadsDep,
    SessionDep,
    Slug,
    StateDep,
    ViewerId,
)
from app.openapi import error_responses
from app.responses import RawJSON

router = APIRouter(prefix="/articles", tags=["Articles", "Favorites"])
_LIST = MultipleArticlesResponse
_ONE = SingleArticleResponse


@router.get("", response_model=_LIST, responses=error_responses(401), openapi_extra=OPTIONAL_AUTH)
async def list_articles(
    reads: ReadsDep,
    page: PageDep,
    tag: Filter = None,
    author: Filter = None,
    favorited: Filter = None,
) -> Response:
    """Most recent articles, optionally by tag, author or the user who favorited them."""
    document = await articles.list_articles(
        reads.connect,
        reads.cache,
        viewer_id=reads.viewer_id,
        tag=tag,
        author=author,
        favorited_by=favorited,
        limit=page.limit,
        offset=page.offset,
    )
    return reads.answer(document)


@router.get("/feed", response_model=_LIST, responses=error_responses(401))
async def feed(viewer_id: ViewerId, state: StateDep, page: PageDep) -> RawJSON:
    """Most recent articles by the authors the current user follows."""
    document = await articles.feed(
        state.connect, viewer_id=viewer_id, limit=page.limit, offset=page.offset
    )
    return RawJSON(document)


@router.post("", status_code=201, response_model=_ONE, responses=error_responses(401))
async def create_article(
    body: NewArticleRequest, user: CurrentUser, session: SessionDep
) -> RawJSON:
    """Publish an article as the current user."""
    return RawJSON(await articles.create(session, author=user, data=body.article), status_code=201)


@router.get(
    "/{slug}", response_model=_ONE, responses=error_responses(401, 404), openapi_extra=OPTIONAL_AUTH
)
async def get_article(slug: Slug, reads: ReadsDep) -> Response:
    """One article, with its body."""
    document = await articles.get_cached(
        reads.connect, reads.cache, slug=slug, viewer_id=reads.viewer_id
    )
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
