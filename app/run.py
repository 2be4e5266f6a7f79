"""`make run`: serve the API, with an embedded PostgreSQL when DATABASE_URL is not set.

HOST, PORT and WORKERS (default 1) choose where and how many uvicorn workers serve.
"""

import os
from pathlib import Path

import uvicorn

from app.config import Settings
from app.migrate import upgrade

DATA_DIR = Path(os.environ.get("DATA_DIR", ".data")).resolve()


def main() -> None:
    if "DATABASE_URL" not in os.environ:
        from app.embedded import start_postgres  # only installed with the `embedded` extra

        os.environ["DATABASE_URL"] = start_postgres(DATA_DIR / "postgres", "conduit")
        print(f"embedded PostgreSQL: {os.environ['DATABASE_URL']}", flush=True)  # noqa: T201
    settings = Settings()
    upgrade(settings.migration_url)
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    print(f"serving http://{host}:{port}/api  (docs: http://{host}:{port}/docs)", flush=True)  # noqa: T201
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=int(os.environ.get("WORKERS", "1")),
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()
