"""Idempotency-Key semantics, one request at a time (concurrency: tests/concurrency/)."""

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import auth, token_for
from tests.factories import make_user

ARTICLE = {"article": {"title": "Once", "description": "d", "body": "b"}}


async def test_replay_returns_stored_response_and_applies_nothing(client, session, settings):
    headers = auth(token_for((await make_user(session)).id, settings)) | {"Idempotency-Key": "k1"}
    first = await client.post("/articles", json=ARTICLE, headers=headers)
    again = await client.post("/articles", json=ARTICLE, headers=headers)
    assert first.status_code == again.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    listed = (
        await client.get(
            "/articles", params={"author": first.json()["article"]["author"]["username"]}
        )
    ).json()
    assert listed["articlesCount"] == 1


async def test_same_key_different_request_is_422(client, session, settings):
    headers = auth(token_for((await make_user(session)).id, settings)) | {"Idempotency-Key": "k2"}
    assert (await client.post("/articles", json=ARTICLE, headers=headers)).status_code == 201
    other = {"article": ARTICLE["article"] | {"body": "changed"}}
    response = await client.post("/articles", json=other, headers=headers)
    assert response.status_code == 422
    assert "different request" in response.json()["errors"]["body"][0]


async def test_keys_belong_to_their_owner(client, session, settings):
    alice = auth(token_for((await make_user(session)).id, settings)) | {"Idempotency-Key": "shared"}
    bob = auth(token_for((await make_user(session)).id, settings)) | {"Idempotency-Key": "shared"}
    a = await client.post("/articles", json=ARTICLE, headers=alice)
    b = await client.post("/articles", json=ARTICLE, headers=bob)
    assert (a.status_code, b.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in b.headers
    assert a.json()["article"]["slug"] != b.json()["article"]["slug"]


async def test_failed_request_stores_nothing(client, session, settings):
    user = await make_user(session)
    headers = auth(token_for(user.id, settings)) | {"Idempotency-Key": "k3"}
    bad = await client.post("/articles", json={"article": {}}, headers=headers)
    assert bad.status_code == 422
    good = await client.post("/articles", json=ARTICLE, headers=headers)
    assert good.status_code == 201
    assert "Idempotent-Replayed" not in good.headers


@pytest.mark.parametrize("path", ["/users", "/users/login"])
async def test_sign_up_and_login_ignore_the_key_and_store_no_token(client, session, path):
    """Their responses carry a token: stored, a replay would hand it out for a day. They
    behave as if no key were sent."""
    body = {"user": {"username": "idem", "email": "idem@x.io", "password": "password1"}}
    if path == "/users/login":
        assert (await client.post("/users", json=body)).status_code == 201
        body = {"user": {"email": "idem@x.io", "password": "password1"}}
    headers = {"Idempotency-Key": "auth-1"}
    first = await client.post(path, json=body, headers=headers)
    again = await client.post(path, json=body, headers=headers)
    assert first.status_code in (200, 201)
    assert "Idempotent-Replayed" not in again.headers
    if path == "/users":
        assert again.status_code == 409  # the sign-up ran again: the name is taken now
    else:
        assert again.status_code == 200
    stored = await session.scalar(text("SELECT count(*) FROM idempotency_keys"))
    assert stored == 0


async def test_delete_replays_its_204(client, session, settings):
    user = await make_user(session)
    headers = auth(token_for(user.id, settings))
    slug = (await client.post("/articles", json=ARTICLE, headers=headers)).json()["article"]["slug"]
    keyed = headers | {"Idempotency-Key": "del-1"}
    first = await client.delete(f"/articles/{slug}", headers=keyed)
    again = await client.delete(f"/articles/{slug}", headers=keyed)
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("key", [b"", b"x" * 256, "caf\u00e9".encode()])
async def test_malformed_key_is_422(client, session, settings, key):
    headers = auth(token_for((await make_user(session)).id, settings))
    response = await client.post(
        "/articles",
        json=ARTICLE,
        headers={**headers, "Idempotency-Key": key},
    )
    assert response.status_code == 422


async def test_expired_key_is_purged_and_the_request_runs_again(client, session, settings):
    headers = auth(token_for((await make_user(session)).id, settings)) | {"Idempotency-Key": "old"}
    assert (await client.post("/articles", json=ARTICLE, headers=headers)).status_code == 201
    await session.execute(
        text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    )
    again = await client.post("/articles", json=ARTICLE, headers=headers)
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers


async def test_database_down_is_503_not_500(settings, session):
    """The middleware runs outside FastAPI's handlers: a dead database must still be a 503."""
    from app.db import make_engine
    from app.main import create_app
    from tests.conftest import ROOT, make_state, serve_with_state

    user = await make_user(session)
    nowhere = make_engine(
        settings.model_copy(update={"database_url": "postgresql+psycopg://x@127.0.0.1:1/x"})
    )
    state = make_state(settings, nowhere)
    transport = httpx.ASGITransport(app=serve_with_state(create_app(settings), state))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
            headers = auth(token_for(user.id, settings)) | {"Idempotency-Key": "down"}
            response = await client.post("/articles", json=ARTICLE, headers=headers)
    finally:
        await nowhere.dispose()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
