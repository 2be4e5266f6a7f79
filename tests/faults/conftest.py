"""The fault suite runs against a stack of its own (state in .stack/faults-test, free ports),
like tests/bench: its faults stop PostgreSQL, PgBouncer and Redis and kill processes, which
must not disturb the stack of tests/stack. Re-exporting tests/stack's session fixture here
would not share it: pytest would make a second fixture definition, whose second flock on
.stack/test.lock, taken in the same process while the first is held, never returns.

The fixture is module-scoped, so this stack is down again before the rest of the suite runs."""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from app.security import make_token
from tests.ports import brought_up
from tests.stack.conftest import PORT_VARIABLES, ROOT, WORKERS, Stack

STATE = ROOT / ".stack" / "faults-test"
USERS = 40


@dataclass(frozen=True)
class FaultStack(Stack):
    """tests/stack's Stack, pointed at this suite's state directory."""

    @property
    def env(self) -> dict[str, str]:
        lines = (STATE / "stack.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    @property
    def postgres_log(self) -> Path:
        return STATE / "postgres" / "postgres.log"

    def api_master_pid(self) -> int:
        return int((STATE / "api" / "api.pid").read_text())

    def job_supervisor_pid(self) -> int:
        return int((STATE / "worker" / "worker.pid").read_text())

    def job_worker_pid(self) -> int | None:
        """The SAQ worker: the supervisor's only child (None while it is being restarted)."""
        supervisor = self.job_supervisor_pid()
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        return int(children[0]) if children else None

    def users(self, prefix: str, count: int) -> list[tuple[int, dict[str, str]]]:
        """Committed users straight into PostgreSQL (argon2 sign-ups would dominate), with
        tokens signed by the stack's own secret: (user id, Authorization header)."""
        with psycopg.connect(self.env["DIRECT_DATABASE_URL"], autocommit=True) as conn:
            rows = conn.execute(
                "INSERT INTO users (username, email, password_hash) "
                "SELECT %(p)s || n, %(p)s || n || '@x.io', 'x' FROM generate_series(1, %(c)s) n "
                "RETURNING id",
                {"p": prefix, "c": count},
            ).fetchall()
        secret = json.loads((STATE / "secrets.json").read_text())["jwt"]
        return [
            (
                row[0],
                {"Authorization": f"Token {make_token(row[0], secret=secret, ttl_seconds=3600)}"},
            )
            for row in rows
        ]


def _settings(ports: list[int]) -> dict[str, str]:
    return {
        "STACK_DIR": str(STATE),
        "STACK_WORKERS": str(WORKERS),  # two: one is killed while the other serves
        # An exhausted pool answers 503 + Retry-After after 3 s, inside the 5 s request
        # deadline, rather than the stack's 10 s (which the deadline would cut to a 504).
        "DB_POOL_TIMEOUT": "3",
        **{name: str(port) for name, port in zip(PORT_VARIABLES, ports, strict=True)},
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[FaultStack]:
    with brought_up(
        STATE,
        STATE.parent / "faults-test.lock",
        len(PORT_VARIABLES),
        lambda ports: FaultStack(_settings(ports)),
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def users(stack: FaultStack) -> list[tuple[int, dict[str, str]]]:
    return stack.users(f"fu{uuid.uuid4().hex[:8]}n", USERS)  # the data outlives a run
