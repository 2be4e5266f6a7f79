from app.comments.schemas import MultipleCommentsResponse
from tests.conftest import auth, token_for
from tests.factories import follow, make_article, make_comment, make_user


async def test_add_list_and_delete_comment(client, session, settings):
    article = await make_article(session, await make_user(session))
    commenter = await make_user(session, username="commenter")
    headers = auth(token_for(commenter.id, settings))
    created = await client.post(
        f"/articles/{article.slug}/comments",
        json={"comment": {"body": "Thank you so much!"}},
        headers=headers,
    )
    assert created.status_code == 200
    comment = created.json()["comment"]
    assert comment["body"] == "Thank you so much!"
    assert comment["author"]["username"] == "commenter"
    assert comment["createdAt"].endswith("Z")

    listed = await client.get(f"/articles/{article.slug}/comments")
    assert listed.json() == {"comments": [comment]}

    deleted = await client.delete(
        f"/articles/{article.slug}/comments/{comment['id']}", headers=headers
    )
    assert deleted.status_code == 204
    assert (await client.get(f"/articles/{article.slug}/comments")).json() == {"comments": []}


async def test_comments_oldest_first_with_the_viewers_following(client, session, settings):
    """Rendered by PostgreSQL: the shape the OpenAPI document shows, in order, with the
    viewer's own flags."""
    author, fan = await make_user(session), await make_user(session)
    article = await make_article(session, author)
    first = await make_comment(session, article, author, body="first")
    second = await make_comment(session, article, fan, body='second\n"quoted"')
    await follow(session, fan, author)
    url = f"/articles/{article.slug}/comments"

    anonymous = (await client.get(url)).json()
    assert MultipleCommentsResponse.model_validate(anonymous)
    assert [c["id"] for c in anonymous["comments"]] == [first.id, second.id]
    assert anonymous["comments"][1]["body"] == 'second\n"quoted"'
    assert [c["author"]["following"] for c in anonymous["comments"]] == [False, False]
    as_fan = (await client.get(url, headers=auth(token_for(fan.id, settings)))).json()
    assert [c["author"]["following"] for c in as_fan["comments"]] == [True, False]


async def test_delete_comment_of_someone_else_is_403(client, session, settings):
    article = await make_article(session, await make_user(session))
    comment = await make_comment(session, article, await make_user(session))
    other = auth(token_for((await make_user(session)).id, settings))
    response = await client.delete(f"/articles/{article.slug}/comments/{comment.id}", headers=other)
    assert response.status_code == 403


async def test_comment_on_other_article_or_unknown_is_404(client, session, settings):
    author = await make_user(session)
    article = await make_article(session, author)
    elsewhere = await make_comment(session, await make_article(session, author), author)
    headers = auth(token_for(author.id, settings))
    for comment_id in (elsewhere.id, 999_999_999):
        response = await client.delete(
            f"/articles/{article.slug}/comments/{comment_id}", headers=headers
        )
        assert response.status_code == 404
    for bad in ("abc", "0", "99999999999999999999999"):
        response = await client.delete(f"/articles/{article.slug}/comments/{bad}", headers=headers)
        assert response.status_code == 422


async def test_comment_requires_auth_and_body(client, session, settings):
    article = await make_article(session, await make_user(session))
    url = f"/articles/{article.slug}/comments"
    assert (await client.post(url, json={"comment": {"body": "x"}})).status_code == 401
    headers = auth(token_for((await make_user(session)).id, settings))
    bodies: list[dict[str, object]] = [
        {},
        {"comment": {}},
        {"comment": {"body": ""}},
        {"comment": {"body": 3}},
    ]
    for body in bodies:
        assert (await client.post(url, json=body, headers=headers)).status_code == 422
