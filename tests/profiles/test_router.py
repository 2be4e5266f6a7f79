from tests.conftest import auth, token_for
from tests.factories import follow, make_user


async def test_profile_anonymous_and_as_follower(client, session, settings):
    celeb = await make_user(session, username="celeb", bio="famous")
    fan = await make_user(session)
    await follow(session, fan, celeb)

    anonymous = await client.get("/profiles/celeb")
    assert anonymous.status_code == 200
    assert anonymous.json() == {
        "profile": {"username": "celeb", "bio": "famous", "image": None, "following": False}
    }
    as_fan = await client.get("/profiles/celeb", headers=auth(token_for(fan.id, settings)))
    assert as_fan.json()["profile"]["following"] is True


async def test_unknown_profile_is_404(client):
    response = await client.get("/profiles/nobody")
    assert response.status_code == 404
    assert response.json()["errors"]["body"]


async def test_follow_and_unfollow_are_idempotent(client, session, settings):
    celeb = await make_user(session, username="celeb2")
    fan = await make_user(session)
    headers = auth(token_for(fan.id, settings))
    for _ in range(2):
        response = await client.post("/profiles/celeb2/follow", headers=headers)
        assert response.status_code == 200
        assert response.json()["profile"]["following"] is True
    assert (await client.get(f"/profiles/{celeb.username}", headers=headers)).json()["profile"][
        "following"
    ]
    for _ in range(2):
        response = await client.delete("/profiles/celeb2/follow", headers=headers)
        assert response.status_code == 200
        assert response.json()["profile"]["following"] is False


async def test_follow_requires_auth_and_existing_user(client, session, settings):
    user = await make_user(session)
    assert (await client.post("/profiles/whoever/follow")).status_code == 401
    missing = await client.post(
        "/profiles/nobody/follow", headers=auth(token_for(user.id, settings))
    )
    assert missing.status_code == 404


async def test_follow_self_is_403(client, session, settings):
    user = await make_user(session)
    response = await client.post(
        f"/profiles/{user.username}/follow", headers=auth(token_for(user.id, settings))
    )
    assert response.status_code == 403
