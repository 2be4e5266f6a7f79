import jwt
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import User
from tests.conftest import FAST_HASHING, auth, token_for
from tests.factories import make_user


async def register(client, username="jake", email="jake@jake.jake", password="jakejake1"):  # noqa: S107
    body = {"user": {"username": username, "email": email, "password": password}}
    return await client.post("/users", json=body)


async def test_register_returns_user_with_token(client):
    response = await register(client, email="Jake@Jake.Jake")
    assert response.status_code == 201
    user = response.json()["user"]
    assert user == {
        "email": "jake@jake.jake",
        "token": user["token"],
        "username": "jake",
        "bio": "",
        "image": None,
    }
    me = await client.get("/user", headers=auth(user["token"]))
    assert me.json()["user"]["username"] == "jake"


@pytest.mark.parametrize(
    ("username", "email", "taken"),
    [("jake", "other@x.io", "username"), ("other", "JAKE@jake.jake", "email")],
)
async def test_register_duplicate_is_409(client, username, email, taken):
    assert (await register(client)).status_code == 201
    response = await register(client, username=username, email=email)
    assert response.status_code == 409
    assert response.json() == {"errors": {"body": [f"{taken} has already been taken"]}}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user": {}},
        {"username": "a", "email": "a@b.c", "password": "password1"},
        {"user": {"username": "a", "email": "not-an-email", "password": "password1"}},
        {"user": {"username": "a", "email": "a@b.c", "password": "short"}},
        {"user": {"username": "", "email": "a@b.c", "password": "password1"}},
        {"user": {"username": "x" * 65, "email": "a@b.c", "password": "password1"}},
        {"user": {"username": 12, "email": "a@b.c", "password": "password1"}},
        {"user": "jake"},
        [],
    ],
)
async def test_register_invalid_is_422_in_realworld_shape(client, body):
    response = await client.post("/users", json=body)
    assert response.status_code == 422
    errors = response.json()["errors"]["body"]
    assert errors
    assert all(isinstance(message, str) for message in errors)


async def test_malformed_json_is_422(client):
    response = await client.post(
        "/users", content=b'{"user": {', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "errors" in response.json()


async def test_body_over_limit_is_413(client, settings):
    big = "x" * (settings.max_body_bytes + 1)
    response = await client.post(
        "/users", content=big.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["errors"]["body"]


async def test_login_with_right_and_wrong_password(client):
    await register(client)
    good = await client.post(
        "/users/login", json={"user": {"email": "JAKE@jake.jake", "password": "jakejake1"}}
    )
    assert good.status_code == 200
    assert good.json()["user"]["username"] == "jake"
    for email, password in [("jake@jake.jake", "wrong-pass"), ("nobody@x.io", "jakejake1")]:
        bad = await client.post(
            "/users/login", json={"user": {"email": email, "password": password}}
        )
        assert bad.status_code == 401
        assert bad.json() == {"errors": {"body": ["email or password is invalid"]}}


async def test_login_upgrades_a_hash_made_with_older_parameters(client, session):
    """Hashes record their argon2 parameters: one made with others than today's still
    verifies, and the login stores the password again with today's (FAST_HASHING here)."""
    await register(client)
    older = PasswordHasher(time_cost=1, memory_cost=2048, parallelism=1).hash("jakejake1")
    await session.execute(update(User).where(User.username == "jake").values(password_hash=older))
    await session.commit()
    login = {"user": {"email": "jake@jake.jake", "password": "jakejake1"}}

    wrong = await client.post("/users/login", json={"user": login["user"] | {"password": "x" * 9}})
    assert wrong.status_code == 401
    assert await _stored_hash(session) == older  # a wrong password changes nothing

    assert (await client.post("/users/login", json=login)).status_code == 200
    upgraded = await _stored_hash(session)
    assert upgraded is not None
    assert upgraded != older
    assert not FAST_HASHING.needs_rehash(upgraded)
    assert (await client.post("/users/login", json=login)).status_code == 200
    assert await _stored_hash(session) == upgraded  # once


async def test_the_upgraded_hash_is_committed(committing_client, engine):
    """As above, through the real pool: the upgrade is committed with the login's own
    transaction, not left in a connection nobody commits."""
    await register(committing_client)
    older = PasswordHasher(time_cost=1, memory_cost=2048, parallelism=1).hash("jakejake1")
    async with engine.begin() as conn:
        await conn.execute(update(User).where(User.username == "jake").values(password_hash=older))
    login = {"user": {"email": "jake@jake.jake", "password": "jakejake1"}}
    assert (await committing_client.post("/users/login", json=login)).status_code == 200
    async with engine.connect() as conn:
        stored = await conn.scalar(select(User.password_hash).where(User.username == "jake"))
    assert stored is not None
    assert stored != older
    assert not FAST_HASHING.needs_rehash(stored)


async def _stored_hash(session: AsyncSession) -> str | None:
    session.expire_all()
    return await session.scalar(select(User.password_hash).where(User.username == "jake"))


async def test_current_user_requires_valid_token(client, session, settings):
    user = await make_user(session)
    cases = {
        "missing": {},
        "wrong scheme": {"Authorization": f"Bearer {token_for(user.id, settings)}"},
        "garbage": {"Authorization": "Token not.a.jwt"},
        "forged": auth(token_for(user.id, settings, secret="another-secret-" + "y" * 32)),
        "expired": auth(token_for(user.id, settings, ttl_seconds=-10)),
        "deleted user": auth(token_for(10**12, settings)),
    }
    for case, headers in cases.items():
        response = await client.get("/user", headers=headers)
        assert response.status_code == 401, case
        assert response.headers["WWW-Authenticate"] == "Token"
        assert response.json()["errors"]["body"], case


async def test_update_user_changes_only_given_fields(client):
    token = (await register(client)).json()["user"]["token"]
    response = await client.put(
        "/user",
        json={"user": {"bio": "I work at statefarm", "image": "https://i.io/a.png"}},
        headers=auth(token),
    )
    assert response.status_code == 200
    user = response.json()["user"]
    assert (user["bio"], user["image"], user["email"]) == (
        "I work at statefarm",
        "https://i.io/a.png",
        "jake@jake.jake",
    )
    response = await client.put(
        "/user",
        json={"user": {"password": "new-password", "currentPassword": "jakejake1"}},
        headers=auth(token),
    )
    assert response.status_code == 200
    login = await client.post(
        "/users/login", json={"user": {"email": "jake@jake.jake", "password": "new-password"}}
    )
    assert login.status_code == 200


async def test_update_user_to_taken_name_is_409_and_changes_nothing(client):
    await register(client, username="taken", email="taken@x.io")
    token = (await register(client)).json()["user"]["token"]
    response = await client.put(
        "/user", json={"user": {"username": "taken", "bio": "new"}}, headers=auth(token)
    )
    assert response.status_code == 409
    me = (await client.get("/user", headers=auth(token))).json()["user"]
    assert (me["username"], me["bio"]) == ("jake", "")


@pytest.mark.parametrize(
    "body", [{"user": {}}, {"user": {"email": None}}, {"user": {"password": "short"}}, {"user": []}]
)
async def test_update_user_invalid_is_422(client, body):
    token = (await register(client)).json()["user"]["token"]
    response = await client.put("/user", json=body, headers=auth(token))
    assert response.status_code == 422
    assert response.json()["errors"]["body"]


async def test_a_new_email_or_password_needs_the_current_password(client):
    token = (await register(client)).json()["user"]["token"]
    for change in ({"email": "new@jake.jake"}, {"password": "new-password"}):
        missing = await client.put("/user", json={"user": change}, headers=auth(token))
        assert missing.status_code == 422
        assert "currentPassword" in missing.json()["errors"]["body"][0]
        wrong = await client.put(
            "/user", json={"user": change | {"currentPassword": "not-mine-1"}}, headers=auth(token)
        )
        assert wrong.status_code == 403
    me = (await client.get("/user", headers=auth(token))).json()["user"]
    assert me["email"] == "jake@jake.jake"  # nothing changed
    # The official Postman collection sends the unchanged email: no password needed for that.
    same = await client.put(
        "/user", json={"user": {"email": "JAKE@jake.jake", "bio": "b"}}, headers=auth(token)
    )
    assert same.status_code == 200
    moved = await client.put(
        "/user",
        json={"user": {"email": "new@jake.jake", "currentPassword": "jakejake1"}},
        headers=auth(token),
    )
    assert moved.status_code == 200
    assert moved.json()["user"]["email"] == "new@jake.jake"


async def test_a_password_change_revokes_the_tokens_issued_before(client):
    old = (await register(client)).json()["user"]["token"]
    changed = await client.put(
        "/user",
        json={"user": {"password": "new-password", "currentPassword": "jakejake1"}},
        headers=auth(old),
    )
    assert changed.status_code == 200
    new = changed.json()["user"]["token"]
    article = {"article": {"title": "T", "description": "d", "body": "b"}}
    for method, path, body in [
        ("GET", "/user", None),
        ("PUT", "/user", {"user": {"bio": "stolen"}}),
        ("POST", "/articles", article),
        ("DELETE", "/webhooks/1", None),  # every write, whatever it needs of the user
        ("POST", "/webhooks/deliveries/1/retry", None),
    ]:
        refused = await client.request(method, path, json=body, headers=auth(old))
        assert refused.status_code == 401, (method, path)
        assert "revoked" in refused.json()["errors"]["body"][0]
    assert (await client.get("/user", headers=auth(new))).status_code == 200
    assert (await client.post("/articles", json=article, headers=auth(new))).status_code == 201
    # Reads that need only the viewer's id do not check (documented): still answered.
    assert (await client.get("/articles", headers=auth(old))).status_code == 200
    login = await client.post(
        "/users/login", json={"user": {"email": "jake@jake.jake", "password": "new-password"}}
    )
    assert (await client.get("/user", headers=auth(login.json()["user"]["token"]))).is_success


@pytest.mark.parametrize("version", ["1", True, -1, 2**31, 1.0, None, [0]])
async def test_a_malformed_token_version_is_401(client, session, settings, version):
    user = await make_user(session)
    claims = {"sub": str(user.id), "ver": version, "exp": 2**40}
    token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    response = await client.get("/user", headers=auth(token))
    assert response.status_code == 401


async def test_a_token_without_a_version_is_version_0(client, session, settings):
    """Tokens issued before versions existed keep working until the first password change."""
    user = await make_user(session)
    token = jwt.encode({"sub": str(user.id), "exp": 2**40}, settings.jwt_secret, algorithm="HS256")
    assert (await client.get("/user", headers=auth(token))).status_code == 200
