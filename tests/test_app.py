"""Cross-cutting behaviour: probes, CORS, unknown routes, docs, the OpenAPI document."""

import asyncio
import time
from dataclasses import replace

import httpx
from sqlalchemy import text

from app.dependencies import get_engine
from app.main import create_app
from app.security import PasswordHashing
from tests.conftest import ROOT, serve_with_state


async def test_unknown_route_and_method_use_error_shape(client):
    missing = await client.get("/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["errors"]["body"]
    wrong = await client.patch("/tags")
    assert wrong.status_code == 405
    assert wrong.json()["errors"]["body"]


async def test_cors_preflight_is_answered(client):
    response = await client.options(
        "/articles",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "https://app.example.com")
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_cors_decorates_browser_requests_and_varies_on_origin(client):
    browser = await client.get("/tags", headers={"Origin": "https://app.example.com"})
    assert browser.headers["access-control-allow-origin"] == "*"
    assert "Origin" in browser.headers["vary"]
    plain = await client.get("/tags")  # no Origin: the fast path
    assert "access-control-allow-origin" not in plain.headers
    # A shared cache keeps the two apart (and a reader's own view from everyone else's).
    assert {token.strip() for token in plain.headers["vary"].split(",")} == {
        "Authorization",
        "Origin",
    }


async def test_probes(client):
    for probe in ("/healthz", "/livez", "/readyz"):
        response = await client.get(ROOT + probe)
        assert response.status_code == 200, probe
    assert (await client.get(ROOT + "/readyz")).json() == {"database": "ok"}


async def test_docs_are_served_without_a_cdn(client):
    page = await client.get(ROOT + "/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assert (await client.get(ROOT + "/docs/static/swagger-ui-bundle.js")).status_code == 200


async def test_openapi_documents_realworld_error_shape(client):
    spec = (await client.get(ROOT + "/openapi.json")).json()
    unprocessable = spec["paths"]["/api/users"]["post"]["responses"]["422"]
    assert unprocessable["content"]["application/json"]["schema"]["$ref"].endswith(
        "/GenericErrorModel"
    )
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    conflict = spec["paths"]["/api/users"]["post"]["responses"]["409"]
    assert conflict["content"]["application/json"]["schema"]["$ref"].endswith("/GenericErrorModel")


async def test_healthz_stays_responsive_during_50_logins(settings, committing_state):
    """Password hashing runs off the event loop: the app's real argon2 parameters, 50 logins
    at once (with a deadline long enough for 50 real hashes on a busy 2-core machine)."""
    app = create_app(settings.model_copy(update={"request_deadline_s": 120}))
    state = replace(committing_state, hashing=PasswordHashing(4))
    transport = httpx.ASGITransport(app=serve_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        await _logins_while_probing(client)


async def _logins_while_probing(client: httpx.AsyncClient) -> None:
    body = {"user": {"username": "busy", "email": "busy@x.io", "password": "password1"}}
    assert (await client.post("/users", json=body)).status_code == 201
    login = {"user": {"email": "busy@x.io", "password": "password1"}}

    logins = [asyncio.create_task(client.post("/users/login", json=login)) for _ in range(50)]
    worst = 0.0
    probes = 0
    while not all(task.done() for task in logins):
        started = time.perf_counter()
        response = await client.get(ROOT + "/healthz")
        worst = max(worst, time.perf_counter() - started)
        assert response.status_code == 200
        probes += 1
        await asyncio.sleep(0.01)
    results: list[httpx.Response] = await asyncio.gather(*logins)
    assert all(result.status_code == 200 for result in results)
    assert probes >= 5, "the logins finished before the probe could run: not a real test"
    # Blocking argon2 on the loop would stall it for seconds; 0.5 s leaves room for a busy CI box.
    assert worst < 0.5, f"/healthz took {worst:.3f}s while logins ran"


async def test_405_lists_every_method_of_the_path(client):
    response = await client.patch("/articles")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"


async def test_undecodable_body_is_422(client):
    response = await client.post(
        "/users", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["errors"]["body"]


async def test_405_on_feed_does_not_offer_article_methods(client):
    response = await client.patch("/articles/feed")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


async def test_405_names_the_literal_path_not_a_template_it_also_matches(client):
    """`/webhooks/deliveries` also matches `/webhooks/{webhook_id}` (DELETE, declared first);
    its own methods are GET."""
    response = await client.options("/webhooks/deliveries")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    assert (await client.patch("/webhooks/7")).headers["Allow"] == "DELETE"
    response = await client.delete("/webhooks/deliveries")  # not the webhook "deliveries"
    assert (response.status_code, response.headers["Allow"]) == (405, "GET")


async def test_readyz_stays_ready_while_the_pool_is_busy(app, client, settings):
    """A saturated pool means the instance is working, not broken."""
    from app.db import make_engine

    small = make_engine(settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout": 5.0}))
    app.dependency_overrides[get_engine] = lambda: small
    try:
        async with small.connect() as held:
            await held.execute(text("SELECT 1"))
            busy = await client.get(ROOT + "/readyz")
        idle = await client.get(ROOT + "/readyz")
    finally:
        await small.dispose()
    assert (busy.status_code, busy.json()) == (200, {"database": "ok"})
    assert idle.status_code == 200


async def test_readyz_is_503_when_the_database_is_unreachable(app, client, settings):
    from app.db import make_engine

    nowhere = make_engine(
        settings.model_copy(update={"database_url": "postgresql+psycopg://x@127.0.0.1:1/x"})
    )
    app.dependency_overrides[get_engine] = lambda: nowhere
    try:
        response = await client.get(ROOT + "/readyz")
    finally:
        await nowhere.dispose()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["database"].startswith("unavailable")
