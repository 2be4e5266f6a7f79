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
    MaybeViewerId,
    PageDep,
    SessionDep,
    Slug,
    ViewerId,
)
from app.openapi import error_responses

router = APIRouter(prefix="/articles", tags=["Articles", "Favorites"])


@router.get("", responses=error_responses(401), openapi_extra=OPTIONAL_AUTH)
async def list_articles(
    viewer_id: MaybeViewerId,
    session: SessionDep,
    page: PageDep,
    tag: Filter = None,
    author: Filter = None,
    favorited: Filter = None,
) -> MultipleArticlesResponse:
    """Most recent articles, optionally by tag, author or the user who favorited them."""
    return await articles.list_articles(
        session,
        viewer_id=viewer_id,
        tag=tag,
        author=author,
        favorited_by=favorited,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/feed", responses=error_responses(401))
async def feed(viewer_id: ViewerId, session: SessionDep, page: PageDep) -> MultipleArticlesResponse:
    """Most recent articles by the authors the current user follows."""
    return await articles.feed(session, viewer_id=viewer_id, limit=page.limit, offset=page.offset)


@router.post("", status_code=201, responses=error_responses(401))
async def create_article(
    body: NewArticleRequest, user: CurrentUser, session: SessionDep
) -> SingleArticleResponse:
    """Publish an article as the current user."""
    return SingleArticleResponse(
        article=await articles.create(session, author=user, data=body.article)
    )


@router.get("/{slug}", responses=error_responses(401, 404), openapi_extra=OPTIONAL_AUTH)
async def get_article(
    slug: Slug, viewer_id: MaybeViewerId, session: SessionDep
) -> SingleArticleResponse:
    """One article, with its body."""
    return SingleArticleResponse(
        article=await articles.get(session, slug=slug, viewer_id=viewer_id)
    )


@router.put("/{slug}", responses=error_responses(401, 403, 404))
async def update_article(
    slug: Slug, body: UpdateArticleRequest, user: CurrentUser, session: SessionDep
) -> SingleArticleResponse:
    """Change the title, description or body of one's own article."""
    changes = body.article.model_dump(exclude_unset=True, by_alias=False)
    article = await articles.update_article(session, slug=slug, user=user, changes=changes)
    return SingleArticleResponse(article=article)


@router.delete("/{slug}", status_code=204, responses=error_responses(401, 403, 404))
async def delete_article(slug: Slug, user: CurrentUser, session: SessionDep) -> Response:
    """Delete one's own article."""
    await articles.delete_article(session, slug=slug, user=user)
    return Response(status_code=204)


@router.post("/{slug}/favorite", responses=error_responses(401, 404))
async def favorite(slug: Slug, user: CurrentUser, session: SessionDep) -> SingleArticleResponse:
    """Favorite an article."""
    return SingleArticleResponse(article=await articles.favorite(session, slug=slug, user=user))


@router.delete("/{slug}/favorite", responses=error_responses(401, 404))
async def unfavorite(slug: Slug, user: CurrentUser, session: SessionDep) -> SingleArticleResponse:
    """Remove a favorite."""
    return SingleArticleResponse(article=await articles.unfavorite(session, slug=slug, user=user))
