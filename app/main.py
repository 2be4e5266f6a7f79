"""The application factory: settings in, FastAPI app out.

Layers, outermost first:

1. RequestEdge (app/middleware/request_edge.py), one layer: CORS; request id, metrics and the
   access log line (it answers /metrics and the liveness probes itself); 431 and 413 before
   any parsing; admission (a bounded line, 503 for what cannot be served in time); the
   deadline (504); cancellation when the client goes away.
2. HotReads (app/hot_reads.py): the plain case of the hottest GETs, answered here.
3. Starlette's and FastAPI's outer layers: the 500 handler (`unexpected` below), FastAPI's
   exception telemetry and body limit. They wrap only what the two layers above pass on.
4. RateLimit (when configured): 429 per client or user, in Redis.
5. StreamedUploads: bulk imports, a few at once (503), paced by an idle timeout (408).
6. Idempotency: replays, conflicts, the transaction shared with the session dependency.
7. FastAPI's own exception handling → routes.

Outside all of them sits FastAPI's native telemetry (the server span, only when tracing is on).
"""

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import compile_path
from starlette.types import ASGIApp

from app import gc_tuning, hot_reads, jwt_secret, replicas
from app.articles.router import router as articles_router
from app.cache.store import Cache
from app.comments.router import router as comments_router
from app.config import Settings
from app.db import is_unavailable, make_engine, make_read_pool, make_sessionmaker
from app.errors import AppError, TooManyRequests
from app.health import router as health_router
from app.imports.router import router as imports_router
from app.middleware import edge
from app.middleware.idempotency import Idempotency
from app.middleware.ratelimit import RateLimit
from app.middleware.request_edge import RequestEdge
from app.middleware.uploads import StreamedUploads
from app.observability import logs, metrics, recorder, tracing
from app.observability.routes import RouteTemplates
from app.openapi import error_responses
from app.profiles.router import router as profiles_router
from app.queue import make_queue
from app.redis import make_cache_redis, make_redis
from app.security import PasswordHashing
from app.state import AppState, as_lifespan_state
from app.tags.router import router as tags_router
from app.users.router import router as users_router
from app.webhooks.router import router as webhooks_router

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("conduit")

DOCS_SECTIONS = (
    "User and Authentication",
    "Profile",
    "Articles",
    "Comments",
    "Favorites",
    "Tags",
    "Imports",
    "Webhooks",
    "Health",
)

# Bulk import bodies stream (up to IMPORT_MAX_BYTES) past the body limit and idempotency buffers.
IMPORTS_PATH = "/api/imports"
# Sign-up and login answer with a token: a stored response would hand it to a replay for a day.
AUTH_PATHS = ("/api/users", "/api/users/login")


class Conduit(FastAPI):
    """FastAPI with the edge's layers (`edge_middleware`, outermost first) outside Starlette's
    and FastAPI's own outer layers: what the edge answers itself (probes, /metrics, 413,
    431, 503, the hot reads) passes through nothing else. The app's 500s are rendered inside
    the edge, by its 500 handler (`unexpected`: called by Starlette's ServerErrorMiddleware,
    or by the hot reads), so the edge adds the request id to them and counts them."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.edge_middleware: list[Middleware] = []

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for cls, args, kwargs in reversed(self.edge_middleware):
            app = cls(app, *args, **kwargs)
        return app


def create_app(
    settings: Settings | None = None, *, tracer_provider: "TracerProvider | None" = None
) -> Conduit:
    """`tracer_provider` overrides the one OTEL_EXPORTER_OTLP_ENDPOINT configures (tests)."""
    settings = settings or Settings()
    jwt_secret.require(settings.jwt_secret)  # no API without a signing secret of its own
    logs.configure_logging(settings.log_level)
    tracer_provider = tracer_provider or tracing.configure_tracing(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        # The ORM's share of the connections (writes); public reads have a pool of their own.
        engine = make_engine(settings, autocommit=True, pool_size=settings.write_pool_size)
        if tracer_provider is not None:
            tracing.instrument_engine(engine, tracer_provider)
        redis = make_redis(settings)  # the job queue's and rate limits': never evicts
        cache_redis = make_cache_redis(settings, shared=redis)  # may evict (REDIS_CACHE_URL)
        # Read replicas (DATABASE_REPLICA_URLS): reads through `router`, unless there are none.
        positions = replicas.write_positions(settings, redis, engine)
        router = (
            replicas.Replicas(settings, engine, positions, tracer_provider) if positions else None
        )
        cache = (replicas.RoutedCache if router else Cache)(
            cache_redis if settings.cache_enabled else None, local_bytes=settings.cache_local_bytes
        )
        if router is not None:
            if tracer_provider is not None:
                for node in router.nodes:
                    tracing.instrument_engine(node.engine, tracer_provider)
            router.start()
        if settings.cache_enabled and (url := settings.redis_cache_url or settings.redis_url):
            cache.listen(url, connect_timeout_s=settings.redis_timeout_s)  # L1's invalidations
        reads = router.reads if router else make_read_pool(settings, engine, tracer_provider)
        try:
            with gc_tuning.tuned_for_serving():
                yield as_lifespan_state(
                    AppState(
                        settings=settings,
                        engine=engine,
                        # Public reads run on the driver (app/db_reads.py).
                        connect=router.connect if router else reads.connect,
                        sessions=make_sessionmaker(engine),
                        redis=redis,
                        jobs=make_queue(settings, redis),
                        cache=cache,
                        hashing=PasswordHashing(settings.password_hash_threads),
                        positions=positions,
                    )
                )
        finally:
            if router is not None:
                await router.close()  # its read pools too
            else:
                await reads.close()
            await cache.close()
            if cache_redis is not None and cache_redis is not redis:
                await cache_redis.aclose()
            if redis is not None:
                await redis.aclose()
            await engine.dispose()
            recorder.flush()
            metrics.withdraw_this_process()

    app = Conduit(
        title="Conduit API",
        version="1.0.0",
        description="The RealWorld Conduit API, built for thousands of concurrent users.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        openapi_tags=[{"name": name} for name in DOCS_SECTIONS],  # the spec's order
        telemetry=tracing.fastapi_telemetry(tracer_provider),
        # Starlette's slash redirect builds an absolute URL from the client's Host header
        # (any host a client names would be echoed back); the API has no trailing-slash paths.
        redirect_slashes=False,
    )
    # A request is matched against the routes in order: probes first, then by traffic.
    app.include_router(health_router)
    for router in (
        articles_router,
        comments_router,
        profiles_router,
        tags_router,
        users_router,
        imports_router,
        webhooks_router,
    ):
        app.include_router(router, prefix="/api", responses=error_responses(422))
    _add_error_handlers(app)
    _add_docs(app)
    app.add_middleware(Idempotency, settings=settings, exempt=(IMPORTS_PATH,), unkeyed=AUTH_PATHS)
    app.add_middleware(
        StreamedUploads,
        paths=(IMPORTS_PATH,),
        idle_s=settings.import_chunk_idle_s,
        max_concurrent=settings.import_max_concurrent,
    )
    if (
        settings.rate_limit_auth_per_minute
        or settings.rate_limit_writes_per_minute
        or settings.rate_limit_login_per_account_per_minute
    ):
        app.add_middleware(RateLimit, settings=settings)
    app.edge_middleware = [
        Middleware(
            RequestEdge,
            deadline_s=settings.request_deadline_s,
            max_in_flight=settings.max_in_flight,
            max_queued=settings.max_queued,
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=settings.max_header_bytes,
            streamed={IMPORTS_PATH: settings.import_max_bytes},
            cors_origins=settings.cors_origins,
            routes=RouteTemplates(app),
            metrics=settings.metrics_enabled,
            access_log=settings.access_log,
        ),
        # The plain case of the hottest reads, answered without FastAPI (app/hot_reads.py).
        Middleware(hot_reads.HotReads, handlers=app.exception_handlers),
    ]
    return app


def _errors(
    status_code: int, messages: list[str], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        edge.error_body(*messages),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> Response:
        headers = {"WWW-Authenticate": "Token"} if exc.status_code == 401 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after_s)}
        return _errors(exc.status_code, [str(exc)], headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        messages = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"][1:]) or str(error["loc"][0])
            messages.append(f"{where}: {error['msg']}")
        return _errors(422, messages)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(DBAPIError)
    async def database_unavailable(_: Request, exc: Exception) -> Response:
        if not is_unavailable(exc):
            raise exc  # a bug, not an outage: the 500 of `unexpected` below
        # Pool exhausted or database unreachable: degrade to a fast, retryable answer.
        log.warning("database unavailable: %s", type(exc).__name__)
        return _errors(503, ["database busy or unavailable, retry shortly"], {"Retry-After": "1"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400:
            # FastAPI's only 400 is a body it cannot decode: a validation failure to RealWorld.
            return _errors(422, ["body: not valid JSON"])
        if exc.status_code == 405:
            return _errors(405, [str(exc.detail)], {"Allow": _allowed_methods(request)})
        return _errors(exc.status_code, [str(exc.detail)], exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _errors(500, ["internal server error"])  # the edge adds the request id


def _allowed_methods(request: Request) -> str:
    """The methods of the path template that describes this path: of those that match, the
    one with the fewest parameters (`/webhooks/deliveries` is not the webhook "deliveries" of
    `/webhooks/{webhook_id}`); Starlette's own Allow names the first route's methods only."""
    path = request.scope["path"]
    matching = [
        (template.count("{"), operations)
        for template, operations in request.app.openapi()["paths"].items()
        if compile_path(template)[0].match(path)
    ]
    if not matching:
        return ""
    _, operations = min(matching, key=lambda match: match[0])
    return ", ".join(method.upper() for method in operations)


def _add_docs(app: FastAPI) -> None:
    """Swagger UI from the swagger-ui-bundle wheel: /docs works offline, no CDN."""
    app.mount(
        "/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-static"
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Conduit API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )
