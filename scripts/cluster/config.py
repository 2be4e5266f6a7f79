"""Cluster settings from CLUSTER_* variables, and the StackConfig each tier runs with."""

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from scripts.stack.config import (
    ROOT,
    StackConfig,
    StackError,
    default_db_pool_size,
)

LOOPBACK = "127.0.0.1"
API_PORT = 8000  # on each host's own address


@dataclass(frozen=True)
class DataConfig(StackConfig):
    """The stack's configuration on the bridge address, whose API environment also names
    the replicas (app/replicas.py): API hosts and the job worker read it."""

    replica_urls: tuple[str, ...] = ()

    def api_env(self) -> dict[str, str]:
        env = super().api_env() | {
            "DATABASE_REPLICA_URLS": json.dumps(list(self.replica_urls)),
            "REDIS_CACHE_URL": self.redis_url,  # one Redis for all (make_cache_redis: shared)
        }
        for name in ("REPLICA_MAX_LAG_S", "REPLICA_POLL_S"):
            if value := os.environ.get(name):
                env[name] = value
        return env


@dataclass(frozen=True)
class ClusterConfig:
    state: Path
    hosts: int
    workers: int  # per host
    prefix: str  # of the bridge's, namespaces' and veths' names
    subnet: str  # the first three octets of a /24
    data: DataConfig  # PostgreSQL primary, its PgBouncer, Redis, the API's environment
    replica: DataConfig  # the same, with the replica's PostgreSQL and PgBouncer ports
    edge: StackConfig  # nginx, on loopback

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ClusterConfig":
        env = os.environ if env is None else env

        def number(name: str, default: int) -> int:
            raw = env.get(name, "")
            try:
                return int(raw) if raw else default
            except ValueError as exc:
                raise StackError(f"{name}={raw!r} is not an integer") from exc

        hosts, workers = number("CLUSTER_HOSTS", 3), number("CLUSTER_WORKERS", 1)
        prefix, subnet = env.get("CLUSTER_PREFIX", "cnd"), env.get("CLUSTER_SUBNET", "10.77.0")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", prefix):
            raise StackError(f"CLUSTER_PREFIX={prefix!r}: 1-6 lower-case letters and digits")
        if not re.fullmatch(r"10\.\d{1,3}\.\d{1,3}", subnet) or not 1 <= hosts <= 200:
            raise StackError("CLUSTER_SUBNET is the first three octets of a 10.x.y.0/24")
        state = Path(env.get("CLUSTER_DIR") or ROOT / ".cluster")
        state = state if state.is_absolute() else ROOT / state
        server_pool = number("CLUSTER_PGBOUNCER_POOL_SIZE", 20)
        stack_env = {
            **{k: v for k, v in env.items() if not k.startswith("STACK_")},
            "STACK_DIR": str(state),
            "STACK_WORKERS": str(workers),  # uvicorn --workers on each host
            "STACK_PGBOUNCER_POOL_SIZE": str(server_pool),
            # Each host's share of nginx's count rule admits (scripts/cluster/nodes.py): there
            # is no HAProxy line per host yet, whatever `make stack` uses.
            "STACK_ADMISSION": "nginx",
            "STACK_GRACEFUL_SHUTDOWN_S": env.get("CLUSTER_GRACEFUL_SHUTDOWN_S", "20"),
            # Every API process of every host shares each PgBouncer's pool.
            "DB_POOL_SIZE": env.get("DB_POOL_SIZE")
            or str(default_db_pool_size(server_pool, hosts * workers)),
        }
        base = StackConfig.from_env(stack_env)
        gateway = f"{subnet}.1"
        ports = replace(
            base.ports,
            http=number("CLUSTER_HTTP_PORT", 8280),
            https=number("CLUSTER_HTTPS_PORT", 8643),
            api=API_PORT,
            pgbouncer=number("CLUSTER_PGBOUNCER_PORT", 6533),
            postgres=number("CLUSTER_POSTGRES_PORT", 5533),
            redis=number("CLUSTER_REDIS_PORT", 6391),
        )
        replica_ports = replace(
            ports,
            postgres=number("CLUSTER_REPLICA_PORT", 5534),
            pgbouncer=number("CLUSTER_REPLICA_PGBOUNCER_PORT", 6534),
        )
        own = {f.name: getattr(base, f.name) for f in fields(base)} | {"host": gateway}
        replica = DataConfig(**own | {"ports": replica_ports})
        data = DataConfig(**own | {"ports": ports}, replica_urls=(replica.database_url,))
        return cls(
            state=state,
            hosts=hosts,
            workers=workers,
            prefix=prefix,
            subnet=subnet,
            data=data,
            replica=replace(replica, replica_urls=data.replica_urls),
            edge=replace(base, host=LOOPBACK, ports=ports),
        )

    @property
    def api_url(self) -> str:
        return self.edge.api_url

    def cluster_env(self, host_urls: list[str]) -> dict[str, str]:
        """The contents of cluster.env: stack.env's keys, then the cluster's own."""
        data, replica = self.data, self.replica
        return {
            "API_URL": self.api_url,
            "DATABASE_URL": data.database_url,
            "DIRECT_DATABASE_URL": data.direct_database_url,
            "PGBOUNCER_ADMIN_URL": data.pgbouncer_admin_url,
            "REDIS_URL": data.redis_url,
            "REPLICA_DATABASE_URL": replica.database_url,
            "REPLICA_DIRECT_URL": replica.direct_database_url,
            "REPLICA_PGBOUNCER_ADMIN_URL": replica.pgbouncer_admin_url,
            "DATABASE_REPLICA_URLS": json.dumps(list(data.replica_urls)),
            "API_HOSTS": " ".join(host_urls),
            "API_WORKERS_PER_HOST": str(self.workers),
            "PGBOUNCER_POOL_SIZE": str(data.sizing.server_pool),
            "DB_POOL_SIZE": str(data.sizing.db_pool_size),
        }
