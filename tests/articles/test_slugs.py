"""Slugs follow titles; an old slug still reaches the article: GET answers 301 to the current
URL (the article's and its comments'), writes act on the article itself, and no other article
takes the old slug."""

import httpx
from sqlalchemy import select

from app.articles.schemas import NewArticle
from app.imports.loader import _insert
from app.models import Article
from tests.conftest import ROOT, auth, token_for
from tests.factories import make_article, make_comment, make_user


async def _retitle(
    client: httpx.AsyncClient, slug: str, title: str, headers: dict[str, str]
) -> str:
    response = await client.put(
        f"/articles/{slug}", json={"article": {"title": title}}, headers=headers
    )
    assert response.status_code == 200, response.text
    new: str = response.json()["article"]["slug"]
    return new


async def test_an_old_slug_still_reaches_the_article(client, session, settings):
    author = await make_user(session)
    await make_article(session, author, slug="first-title", title="First title")
    headers = auth(token_for(author.id, settings))
    assert await _retitle(client, "first-title", "Second title", headers) == "second-title"
    assert await _retitle(client, "second-title", "Third title", headers) == "third-title"

    for old in ("first-title", "second-title"):
        moved = await client.get(f"/articles/{old}?fields=slug")
        assert moved.status_code == 301
        assert moved.headers["location"] == "/api/articles/third-title?fields=slug"
        followed = await client.get(f"/articles/{old}", follow_redirects=True)
        assert followed.json()["article"]["title"] == "Third title"
    assert (await client.get("/articles/never-was")).status_code == 404


async def test_an_old_slug_of_the_comments_moves_to_the_current_url(client, session, settings):
    author = await make_user(session)
    article = await make_article(session, author, slug="old-words", title="Old words")
    await make_comment(session, article, author)
    headers = auth(token_for(author.id, settings))
    await _retitle(client, "old-words", "New words", headers)

    moved = await client.get("/articles/old-words/comments?x=1")
    assert moved.status_code == 301
    assert moved.headers["location"] == "/api/articles/new-words/comments?x=1"
    followed = await client.get("/articles/old-words/comments", follow_redirects=True)
    assert followed.status_code == 200
    assert len(followed.json()["comments"]) == 1
    assert (await client.get("/articles/never-was/comments")).status_code == 404


async def test_comments_through_an_old_slug_act_on_the_article(client, session, settings):
    """POST and DELETE resolve the old slug to the article (a redirected write would be
    replayed, or dropped, differently by each client)."""
    author = await make_user(session)
    await make_article(session, author, slug="was-this", title="Was this")
    headers = auth(token_for(author.id, settings))
    await _retitle(client, "was-this", "Is this", headers)

    created = await client.post(
        "/articles/was-this/comments", json={"comment": {"body": "hi"}}, headers=headers
    )
    assert created.status_code == 200
    comment_id = created.json()["comment"]["id"]
    assert [
        c["id"] for c in (await client.get("/articles/is-this/comments")).json()["comments"]
    ] == [comment_id]
    deleted = await client.delete(f"/articles/was-this/comments/{comment_id}", headers=headers)
    assert deleted.status_code == 204
    assert (await client.get("/articles/is-this/comments")).json() == {"comments": []}
    gone = await client.delete(f"/articles/was-this/comments/{comment_id}", headers=headers)
    assert gone.status_code == 404


async def test_the_openapi_document_shows_both_redirects(client):
    paths = (await client.get(ROOT + "/openapi.json")).json()["paths"]
    for path in ("/api/articles/{slug}", "/api/articles/{slug}/comments"):
        responses = paths[path]["get"]["responses"]
        assert "Location" in responses["301"]["headers"], path


async def test_writes_to_an_old_slug_act_on_the_article(client, session, settings):
    author = await make_user(session)
    fan = await make_user(session)
    await make_article(session, author, slug="before", title="Before")
    headers = auth(token_for(author.id, settings))
    await _retitle(client, "before", "After", headers)

    liked = await client.post(
        "/articles/before/favorite", headers=auth(token_for(fan.id, settings))
    )
    assert (liked.json()["article"]["slug"], liked.json()["article"]["favoritesCount"]) == (
        "after",
        1,
    )
    comment = await client.post(
        "/articles/before/comments", json={"comment": {"body": "hi"}}, headers=headers
    )
    assert comment.status_code == 200
    assert len((await client.get("/articles/after/comments")).json()["comments"]) == 1
    edited = await client.put(
        "/articles/before", json={"article": {"body": "new"}}, headers=headers
    )
    assert edited.json()["article"]["body"] == "new"
    assert (await client.delete("/articles/before", headers=headers)).status_code == 204
    assert (await client.get("/articles/after")).status_code == 404
    assert (await client.get("/articles/before")).status_code == 404


async def test_an_old_slug_is_not_given_to_another_article(client, session, settings):
    author = await make_user(session)
    await make_article(session, author, slug="shared-name", title="Shared name")
    headers = auth(token_for(author.id, settings))
    await _retitle(client, "shared-name", "Renamed", headers)

    body = {"article": {"title": "Shared name", "description": "d", "body": "b"}}
    created = (await client.post("/articles", json=body, headers=headers)).json()["article"]
    assert created["slug"].startswith("shared-name-")
    assert (await client.get("/articles/shared-name")).status_code == 301

    # Its own article may take it back.
    assert await _retitle(client, "renamed", "Shared name", headers) == "shared-name"
    assert (await client.get("/articles/shared-name")).json()["article"]["title"] == "Shared name"
    assert (await client.get("/articles/renamed")).status_code == 301


async def test_a_title_taken_by_another_article_gets_a_suffix(client, session, settings):
    author = await make_user(session)
    await make_article(session, author, slug="taken", title="Taken")
    await make_article(session, author, slug="mine", title="Mine")
    headers = auth(token_for(author.id, settings))
    new = await _retitle(client, "mine", "Taken", headers)
    assert new.startswith("taken-")
    assert len(new) == len("taken-") + 8
    assert await _retitle(client, new, "Taken!", headers) == new  # same words: same slug


async def test_an_import_does_not_take_an_old_slug(client, session, settings):
    author = await make_user(session)
    await make_article(session, author, slug="imported-name", title="Imported name")
    await _retitle(client, "imported-name", "Renamed", auth(token_for(author.id, settings)))
    batch = [NewArticle(title="Imported name", description="d", body="b")]
    await _insert(session, author_id=author.id, batch=batch)
    slugs = set(await session.scalars(select(Article.slug).where(Article.author_id == author.id)))
    assert "imported-name" not in slugs
    assert any(slug.startswith("imported-name-") for slug in slugs)
