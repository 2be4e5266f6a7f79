"""`make run`: serve the API, with an embedded PostgreSQL when DATABASE_URL is not set,
plus the job worker (restarted if it dies) and an embedded Redis when REDIS_URL is not set.

HOST, PORT and WORKERS (default 1) choose where and how many uvicorn workers serve. Without
JWT_SECRET, a random secret is generated on the first run and kept in $DATA_DIR/jwt_secret
(mode 0600), so tokens outlive a restart and no published value ever signs one.
"""

import atexit
import os
import signal
import subprocess
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from types import FrameType

import uvicorn

from app import jwt_secret
from app.config import Settings
from app.migrate import upgrade
from app.observability.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

DATA_DIR = jwt_secret.data_dir()


def main() -> None:
    if "DATABASE_URL" not in os.environ:
        from app.dev.embedded import start_postgres  # only installed with the `embedded` extra

        os.environ["DATABASE_URL"] = start_postgres(DATA_DIR / "postgres", "conduit")
        print(f"embedded PostgreSQL: {os.environ['DATABASE_URL']}", flush=True)  # noqa: T201
    provide_jwt_secret(os.environ, DATA_DIR)  # before Settings: the workers inherit it
    settings = Settings()
    upgrade(settings.migration_url)
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    workers = int(os.environ.get("WORKERS", "1"))
    if workers > 1 or MULTIPROC_ENV in os.environ:
        # Several workers, one /metrics: prometheus_client's multiprocess mode, from a clean dir.
        prepare_multiprocess_dir(
            Path(os.environ.setdefault(MULTIPROC_ENV, str(DATA_DIR / "metrics")))
        )
    atexit.register(_start_background())  # stopped when the server returns (Ctrl-C)
    # uvicorn re-raises the signal that stopped it once it has shut down. SIGTERM's default
    # action would end this process there, before atexit stops the worker, Redis and the
    # embedded PostgreSQL: as an exit instead, they go down as with Ctrl-C.
    signal.signal(signal.SIGTERM, _exit)
    print(f"serving http://{host}:{port}/api  (docs: http://{host}:{port}/docs)", flush=True)  # noqa: T201
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def _exit(_signal: int, _frame: FrameType | None) -> None:
    sys.exit(0)


def provide_jwt_secret(environ: MutableMapping[str, str], data_dir: Path) -> None:
    """JWT_SECRET as given, else the one kept in data_dir (generated on the first run)."""
    if not environ.get("JWT_SECRET"):
        environ["JWT_SECRET"] = jwt_secret.load_or_create(data_dir / "jwt_secret")


def _start_background() -> Callable[[], None]:
    """The job worker (`--supervise`: started again if it dies) and, without REDIS_URL, an
    embedded Redis; each in a session of its own, so Ctrl-C stops the API first, then them."""
    processes: list[subprocess.Popen[bytes]] = []
    if "REDIS_URL" not in os.environ:
        from app.dev.embedded import start_redis  # only installed with the `embedded` extra

        os.environ["REDIS_URL"], redis = start_redis(DATA_DIR / "redis")
        processes.append(redis)
        print(f"embedded Redis: {os.environ['REDIS_URL']}", flush=True)  # noqa: T201
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.workers.main", "--supervise"], start_new_session=True
    )
    processes.insert(0, worker)
    print(f"job worker: pid {worker.pid}", flush=True)  # noqa: T201

    def stop() -> None:
        for process in processes:  # the worker finishes its jobs before Redis goes
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    return stop


if __name__ == "__main__":
    main()
