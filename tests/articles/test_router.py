import json

import pytest
from pydantic import BaseModel

from app.articles.schemas import Article, ArticleSummary, MultipleArticlesResponse
from app.schemas import Profile
from tests.conftest import auth, token_for
from tests.factories import favorite, follow, make_article, make_user

NEW = {"title": "How to train your dragon", "description": "Ever wonder how?", "body": "Carefully."}


async def test_create_article_returns_it_with_sorted_unique_tags(client, session, settings):
    user = await make_user(session, username="writer")
    body = {"article": NEW | {"tagList": ["training", "dragons", "training"]}}
    response = await client.post("/articles", json=body, headers=auth(token_for(user.id, settings)))
    assert response.status_code == 201
    article = response.json()["article"]
    assert article["slug"] == "how-to-train-your-dragon"
    assert article["tagList"] == ["dragons", "training"]
    assert (article["favorited"], article["favoritesCount"]) == (False, 0)
    assert article["author"] == {"username": "writer", "bio": "", "image": None, "following": False}
    assert article["createdAt"].endswith("Z")
    assert len(article["createdAt"]) == len("2026-01-01T00:00:00.000Z")
    fetched = await client.get(f"/articles/{article['slug']}")
    assert fetched.json()["article"] == article


async def test_same_title_gets_distinct_slugs(client, session, settings):
    headers = auth(token_for((await make_user(session)).id, settings))
    slugs = set()
    for _ in range(3):
        response = await client.post("/articles", json={"article": NEW}, headers=headers)
        slugs.add(response.json()["article"]["slug"])
    assert len(slugs) == 3
    assert all(slug.startswith("how-to-train-your-dragon") for slug in slugs)


@pytest.mark.parametrize(
    "article",
    [
        {},
        {"title": "t", "description": "d"},
        NEW | {"title": ""},
        NEW | {"title": 5},
        NEW | {"tagList": "dragons"},
        NEW | {"tagList": [1]},
        NEW | {"tagList": [f"t{i}" for i in range(21)]},
        NEW | {"title": "x" * 201},
    ],
)
async def test_create_article_invalid_is_422(client, session, settings, article):
    headers = auth(token_for((await make_user(session)).id, settings))
    response = await client.post("/articles", json={"article": article}, headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"]["body"]


async def test_create_article_requires_auth(client):
    assert (await client.post("/articles", json={"article": NEW})).status_code == 401


async def test_unknown_slug_is_404_everywhere(client, session, settings):
    headers = auth(token_for((await make_user(session)).id, settings))
    calls = [
        client.get("/articles/nope"),
        client.put("/articles/nope", json={"article": {"body": "x"}}, headers=headers),
        client.delete("/articles/nope", headers=headers),
        client.post("/articles/nope/favorite", headers=headers),
        client.delete("/articles/nope/favorite", headers=headers),
        client.get("/articles/nope/comments"),
        client.post("/articles/nope/comments", json={"comment": {"body": "x"}}, headers=headers),
        client.delete("/articles/nope/comments/1", headers=headers),
    ]
    for call in calls:
        response = await call
        assert response.status_code == 404
        assert response.json()["errors"]["body"]


async def test_update_article_title_gives_a_new_slug(client, session, settings):
    author = await make_user(session)
    article = await make_article(session, author, slug="keep-me")
    response = await client.put(
        "/articles/keep-me",
        json={"article": {"title": "New title", "body": "With two hands"}},
        headers=auth(token_for(author.id, settings)),
    )
    assert response.status_code == 200
    updated = response.json()["article"]
    assert (updated["slug"], updated["title"], updated["body"]) == (
        "new-title",
        "New title",
        "With two hands",
    )
    assert updated["description"] == article.description
    assert updated["updatedAt"] >= updated["createdAt"]


async def test_update_article_without_a_new_title_keeps_the_slug(client, session, settings):
    author = await make_user(session)
    await make_article(session, author, slug="keep-me", title="Keep me")
    headers = auth(token_for(author.id, settings))
    for change in ({"body": "With two hands"}, {"title": "Keep  ME!"}):
        response = await client.put("/articles/keep-me", json={"article": change}, headers=headers)
        assert response.json()["article"]["slug"] == "keep-me"


async def test_update_or_delete_by_someone_else_is_403(client, session, settings):
    article = await make_article(session, await make_user(session))
    headers = auth(token_for((await make_user(session)).id, settings))
    put = await client.put(
        f"/articles/{article.slug}", json={"article": {"body": "x"}}, headers=headers
    )
    assert put.status_code == 403
    assert (await client.delete(f"/articles/{article.slug}", headers=headers)).status_code == 403
    assert (await client.get(f"/articles/{article.slug}")).json()["article"]["body"] == "b"


@pytest.mark.parametrize("article", [{}, {"title": None}, {"body": ""}, {"title": ["x"]}])
async def test_update_article_invalid_is_422(client, session, settings, article):
    author = await make_user(session)
    row = await make_article(session, author)
    response = await client.put(
        f"/articles/{row.slug}",
        json={"article": article},
        headers=auth(token_for(author.id, settings)),
    )
    assert response.status_code == 422


async def test_delete_article_removes_it_with_comments(client, session, settings):
    author = await make_user(session)
    article = await make_article(session, author)
    headers = auth(token_for(author.id, settings))
    await client.post(
        f"/articles/{article.slug}/comments", json={"comment": {"body": "hi"}}, headers=headers
    )
    response = await client.delete(f"/articles/{article.slug}", headers=headers)
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/articles/{article.slug}")).status_code == 404


async def test_favorite_is_idempotent_and_counts_exact(client, session, settings):
    article = await make_article(session, await make_user(session))
    fans = [await make_user(session) for _ in range(3)]
    for fan in fans:
        for _ in range(2):
            response = await client.post(
                f"/articles/{article.slug}/favorite", headers=auth(token_for(fan.id, settings))
            )
            assert response.status_code == 200
            assert response.json()["article"]["favorited"] is True
    anonymous = (await client.get(f"/articles/{article.slug}")).json()["article"]
    assert (anonymous["favoritesCount"], anonymous["favorited"]) == (3, False)
    for _ in range(2):
        response = await client.delete(
            f"/articles/{article.slug}/favorite", headers=auth(token_for(fans[0].id, settings))
        )
        assert response.status_code == 200
        assert (
            response.json()["article"]["favorited"],
            response.json()["article"]["favoritesCount"],
        ) == (
            False,
            2,
        )


async def test_list_filters_and_pages_newest_first(client, session):
    alice = await make_user(session, username="alice")
    bob = await make_user(session, username="bob")
    a1 = await make_article(session, alice, tag_list=["x"])
    b1 = await make_article(session, bob, tag_list=["x", "y"])
    a2 = await make_article(session, alice, tag_list=["y"])
    await favorite(session, bob, a1)

    async def slugs(query: str) -> tuple[list[str], int]:
        body = (await client.get(f"/articles{query}")).json()
        return [article["slug"] for article in body["articles"]], body["articlesCount"]

    everything, total = await slugs("?limit=100")
    assert everything[:3] == [a2.slug, b1.slug, a1.slug]
    assert await slugs("?tag=x") == ([b1.slug, a1.slug], 2)
    assert await slugs("?author=alice") == ([a2.slug, a1.slug], 2)
    assert await slugs("?favorited=bob") == ([a1.slug], 1)
    assert await slugs("?author=alice&tag=y") == ([a2.slug], 1)
    assert await slugs("?author=nobody") == ([], 0)
    assert await slugs("?limit=1&offset=1") == ([everything[1]], total)
    listed = (await client.get("/articles?author=alice")).json()["articles"][0]
    assert "body" not in listed


async def test_list_flags_are_per_viewer(client, session, settings):
    author = await make_user(session)
    article = await make_article(session, author)
    fan = await make_user(session)
    await favorite(session, fan, article)
    await follow(session, fan, author)
    query = f"/articles?author={author.username}"
    as_fan = (await client.get(query, headers=auth(token_for(fan.id, settings)))).json()[
        "articles"
    ][0]
    assert (as_fan["favorited"], as_fan["author"]["following"], as_fan["favoritesCount"]) == (
        True,
        True,
        1,
    )
    stranger = await make_user(session)
    other = (await client.get(query, headers=auth(token_for(stranger.id, settings)))).json()[
        "articles"
    ][0]
    assert (other["favorited"], other["author"]["following"]) == (False, False)


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=abc", "offset=-1", "limit=99999999999999999999"]
)
async def test_bad_paging_is_422(client, query):
    response = await client.get(f"/articles?{query}")
    assert response.status_code == 422
    assert response.json()["errors"]["body"]


async def test_feed_shows_followed_authors_only(client, session, settings):
    reader = await make_user(session)
    followed = await make_user(session)
    other = await make_user(session)
    mine = await make_article(session, followed)
    await make_article(session, other)
    await follow(session, reader, followed)
    response = await client.get("/articles/feed", headers=auth(token_for(reader.id, settings)))
    assert response.status_code == 200
    body = response.json()
    assert [article["slug"] for article in body["articles"]] == [mine.slug]
    assert body["articlesCount"] == 1
    assert body["articles"][0]["author"]["following"] is True
    assert (await client.get("/articles/feed")).status_code == 401


@pytest.mark.parametrize("bad", ["nul\x00inside", "lone \ud800 surrogate"])
async def test_unstorable_strings_are_422_not_500(client, session, settings, bad):
    headers = auth(token_for((await make_user(session)).id, settings))
    for article in (NEW | {"title": bad}, NEW | {"tagList": [bad]}, NEW | {"body": bad}):
        payload = json.dumps({"article": article}).encode()
        response = await client.post(
            "/articles", content=payload, headers=headers | {"Content-Type": "application/json"}
        )
        assert response.status_code == 422, article
    assert (await client.get("/articles", params={"tag": "a\x00b"})).status_code == 422
    assert (await client.get("/profiles/a%00b")).status_code == 422


async def test_title_feed_never_gets_the_feed_route_as_slug(client, session, settings):
    headers = auth(token_for((await make_user(session)).id, settings))
    response = await client.post(
        "/articles", json={"article": NEW | {"title": "Feed"}}, headers=headers
    )
    slug = response.json()["article"]["slug"]
    assert slug.startswith("feed-")
    assert (await client.get(f"/articles/{slug}")).json()["article"]["title"] == "Feed"


async def test_json_built_by_postgres_matches_the_documented_schema(client, session, settings):
    """Article bodies are rendered in SQL; they must keep the exact shape of the models that
    the OpenAPI document shows."""
    author = await make_user(session, image="https://i.io/a.png")
    article = await make_article(session, author, tag_list=["a", "b"])
    headers = auth(token_for(author.id, settings))

    def keys(model: type[BaseModel]) -> set[str]:
        return {field.alias or name for name, field in model.model_fields.items()}

    one = (await client.get(f"/articles/{article.slug}", headers=headers)).json()["article"]
    assert Article.model_validate(one)
    assert set(one) == keys(Article)
    assert set(one["author"]) == keys(Profile)
    page = (await client.get("/articles", headers=headers)).json()
    assert MultipleArticlesResponse.model_validate(page)
    assert set(page) == {"articles", "articlesCount", "nextCursor"}
    assert set(page["articles"][0]) == keys(ArticleSummary)
    assert page["articles"][0]["author"]["image"] == "https://i.io/a.png"
