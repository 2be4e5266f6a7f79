from tests.conftest import auth, token_for
from tests.factories import make_user


async def test_tags_lists_every_tag_once_sorted(client, session, settings):
    user = await make_user(session)
    headers = auth(token_for(user.id, settings))
    for tags in (["zeta", "alpha"], ["alpha", "beta"]):
        article = {"article": {"title": "t", "description": "d", "body": "b", "tagList": tags}}
        assert (await client.post("/articles", json=article, headers=headers)).status_code == 201
    response = await client.get("/tags")
    assert response.status_code == 200
    assert response.json() == {"tags": ["alpha", "beta", "zeta"]}
