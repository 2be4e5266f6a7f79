"""The cluster suite runs against a cluster of its own (scripts/cluster): state in
.cluster/test, its own bridge (10.77.1.0/24, prefix "cnt") and free ports, so a developer's
`make cluster` is left alone; brought up once per run and stopped at the end. Root only (it
makes network namespaces), like `make cluster` itself. Nothing here skips."""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from app.security import make_token
from tests.ports import brought_up, run_script

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".cluster" / "test"
PORT_VARIABLES = (
    "CLUSTER_HTTP_PORT",
    "CLUSTER_HTTPS_PORT",
    "CLUSTER_POSTGRES_PORT",
    "CLUSTER_PGBOUNCER_PORT",
    "CLUSTER_REPLICA_PORT",
    "CLUSTER_REPLICA_PGBOUNCER_PORT",
    "CLUSTER_REDIS_PORT",
)
MAX_LAG_S = 1.0  # the staleness the tests hold the replica to (REPLICA_MAX_LAG_S)


@dataclass(frozen=True)
class Cluster:
    settings: dict[str, str]

    def cli(self, *args: str, timeout: float = 240) -> None:
        """`python -m scripts.cluster ARGS` against this cluster; fail with its output."""
        run_script("scripts.cluster", args, self.settings, timeout)

    @property
    def env(self) -> dict[str, str]:
        lines = (STATE / "cluster.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    @property
    def api_url(self) -> str:
        return self.env["API_URL"]

    @property
    def hosts(self) -> list[str]:
        """Each API host's own base URL (its namespace's address)."""
        return self.env["API_HOSTS"].split()

    @property
    def replica_superuser_url(self) -> str:
        secrets = json.loads((STATE / "secrets.json").read_text())
        env = self.env
        host_port = env["REPLICA_DIRECT_URL"].split("@", 1)[1].rsplit("/", 1)[0]
        return f"postgresql://postgres:{secrets['postgres']}@{host_port}/postgres"

    def users(self, count: int) -> list[tuple[int, dict[str, str]]]:
        """Committed users straight into the primary, with tokens signed by the cluster's
        secret: (user id, Authorization header)."""
        prefix = f"cl{uuid.uuid4().hex[:8]}n"  # the data outlives a run
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
        "CLUSTER_DIR": str(STATE),
        "CLUSTER_PREFIX": "cnt",
        "CLUSTER_SUBNET": "10.77.1",
        "CLUSTER_HOSTS": "3",
        "CLUSTER_WORKERS": "1",
        "REPLICA_MAX_LAG_S": str(MAX_LAG_S),
        "CLUSTER_GRACEFUL_SHUTDOWN_S": "2",
        **{name: str(port) for name, port in zip(PORT_VARIABLES, ports, strict=True)},
    }


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with brought_up(
        STATE,
        STATE.parent / "test.lock",
        len(PORT_VARIABLES),
        lambda ports: Cluster(_settings(ports)),
    ) as cluster:
        yield cluster
