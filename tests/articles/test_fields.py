"""`fields=`: only the fields asked for, on every article read; unknown names are 422; the
OpenAPI document describes the parameter and the shape it gives."""

import pytest

from tests.conftest import ROOT, auth, token_for
from tests.factories import follow, make_article, make_user


async def test_fields_shape_a_list_the_feed_and_one_article(client, session, settings):
    reader = await make_user(session)
    author = await make_user(session, username="writer")
    await follow(session, reader, author)
    article = await make_article(session, author, tag_list=["x"])
    headers = auth(token_for(reader.id, settings))

    listed = (await client.get("/articles?fields=slug,author.username&tag=x")).json()
    assert listed["articles"] == [{"slug": article.slug, "author": {"username": "writer"}}]
    assert (listed["articlesCount"], listed["nextCursor"]) == (1, None)

    feed = (await client.get("/articles/feed?fields=title,author", headers=headers)).json()
    assert feed["articles"] == [
        {
            "title": article.title,
            "author": {"username": "writer", "bio": "", "image": None, "following": True},
        }
    ]

    one = (await client.get(f"/articles/{article.slug}?fields= body , favorited")).json()
    assert one == {"article": {"body": "b", "favorited": False}}
    whole = (await client.get(f"/articles/{article.slug}?fields=")).json()["article"]
    assert {"body", "author"} <= set(whole)


@pytest.mark.parametrize(
    "path",
    [
        "/articles?fields=slug,password",
        "/articles?fields=body",  # lists carry no bodies
        "/articles?fields=author.email",
        "/articles?fields=slug;title",
        "/articles/feed?fields=nope",
        "/articles/{slug}?fields=comments",
    ],
)
async def test_unknown_fields_are_422_in_the_realworld_shape(client, session, settings, path):
    viewer = await make_user(session)
    article = await make_article(session, viewer)
    response = await client.get(
        path.format(slug=article.slug), headers=auth(token_for(viewer.id, settings))
    )
    assert response.status_code == 422
    assert response.json()["errors"]["body"]


async def test_the_openapi_document_describes_fields(client):
    document = (await client.get(ROOT + "/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for path in ("/api/articles", "/api/articles/feed", "/api/articles/{slug}"):
        operation = document["paths"][path]["get"]
        parameters = {p["name"]: p for p in operation["parameters"]}
        assert "author.username" in parameters["fields"]["description"]
        shapes = operation["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
        names = {shape["$ref"].rsplit("/", 1)[1] for shape in shapes}
        assert names & {"SelectedArticlesResponse", "SelectedArticleResponse"}
    assert "required" not in schemas["ArticleFields"]
    listing = {p["name"] for p in document["paths"]["/api/articles"]["get"]["parameters"]}
    assert {"q", "cursor", "offset", "limit", "fields"} <= listing
    assert "nextCursor" in schemas["MultipleArticlesResponse"]["properties"]
    assert "301" in document["paths"]["/api/articles/{slug}"]["get"]["responses"]
