"""No N+1: a page costs the same number of SQL statements whatever it holds."""

from tests.conftest import auth, token_for
from tests.factories import favorite, follow, make_article, make_comment, make_user
from tests.statements import count_statements


async def test_listing_twenty_articles_takes_as_many_statements_as_one(
    client, session, engine, settings
):
    viewer = await make_user(session)
    headers = auth(token_for(viewer.id, settings))
    first_author = await make_user(session)
    await make_article(session, first_author, tag_list=["solo"])

    with count_statements(engine) as one_article:
        body = (await client.get("/articles?tag=solo", headers=headers)).json()
    assert len(body["articles"]) == 1

    for _ in range(20):
        author = await make_user(session)
        article = await make_article(session, author, tag_list=["busy", "extra"])
        await favorite(session, viewer, article)
        await follow(session, viewer, author)
    with count_statements(engine) as twenty_articles:
        body = (await client.get("/articles?tag=busy&limit=20", headers=headers)).json()
    assert len(body["articles"]) == 20
    assert all(a["favorited"] and a["author"]["following"] for a in body["articles"])

    assert len(twenty_articles) == len(one_article)
    # page and count in one statement (in tests the request's connection is the test's own)
    assert len(twenty_articles) == 1


async def test_comments_take_constant_statements(client, session, engine):
    article = await make_article(session, await make_user(session))
    with count_statements(engine) as empty:
        await client.get(f"/articles/{article.slug}/comments")
    for _ in range(10):
        await make_comment(session, article, await make_user(session))
    with count_statements(engine) as busy:
        body = (await client.get(f"/articles/{article.slug}/comments")).json()
    assert len(body["comments"]) == 10
    assert len(busy) == len(empty)
