"""What a cluster adds to the stack's components: a primary that lets the hosts and its
replica in, the replica (pg_basebackup, streaming), its PgBouncer, one API per host in its
namespace, and nginx over every host."""

import os
import re
import signal
from contextlib import suppress
from dataclasses import dataclass

from psycopg import sql

from scripts.cluster.network import Network
from scripts.stack import system
from scripts.stack.base import connect
from scripts.stack.config import render
from scripts.stack.data import PgBouncer, Postgres, Redis
from scripts.stack.system import POSTGRES_BIN, log
from scripts.stack.web import Api, Nginx

SLOT = "conduit_replica"  # the replica's physical replication slot: the primary keeps its WAL
# nginx's passive health check: one failed attempt (refused, reset, timed out) takes a host
# out for FAIL_TIMEOUT_S, then one request tries it again.
FAIL_TIMEOUT_S = 2
REPLICA_QUERY_WAIT_S = 2


def _hba(subnet: str) -> str:
    return (
        "# TYPE  DATABASE     USER      ADDRESS           METHOD  (scripts/cluster)\n"
        "host    all          all       127.0.0.1/32      scram-sha-256\n"
        f"host    all          all       {subnet}.0/24     scram-sha-256\n"
        f"host    replication  postgres  {subnet}.0/24     scram-sha-256\n"
    )


@dataclass(frozen=True)
class Primary(Postgres):
    """The stack's PostgreSQL on the bridge address, open to the hosts' subnet and to
    replication (the defaults of PostgreSQL 15 stream WAL: wal_level replica, 10 senders)."""

    subnet: str = ""

    def start(self) -> None:
        super().start()
        system.write_service_file(self.data / "pg_hba.conf", _hba(self.subnet))
        pg_ctl = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data)]
        system.run_as_service([*pg_ctl, "reload"], log_file=self.log_file)


@dataclass(frozen=True)
class Replica(Postgres):
    """A hot standby of the primary: cloned once with pg_basebackup (-R: it streams from the
    primary through the slot), then started and stopped like any PostgreSQL. Its config is the
    stack's, on its own port; hot_standby_feedback keeps the primary's vacuum from cancelling
    the replica's reads."""

    name: str = "replica"
    port_variable: str = "CLUSTER_REPLICA_PORT"
    primary_url: str = ""  # superuser on the primary, for the slot
    primary_port: int = 0

    @property
    def port(self) -> int:
        return self.config.ports.postgres

    def start(self) -> None:
        system.make_service_dir(self.dir)
        system.check_service_can_reach(self.dir)
        if not (self.data / "PG_VERSION").exists():
            self._clone()
        self._follow_primary()
        sizing = self.config.sizing
        settings = render(
            "postgresql.conf",
            {
                "HOST": self.config.host,
                "PORT": self.port,
                "SERVER_POOL": sizing.server_pool,
                # A standby needs at least the primary's max_connections.
                "MAX_CONNECTIONS": sizing.postgres_max_connections,
            },
        )
        settings += (
            "\n# scripts/cluster: a hot standby\nhot_standby = on\nhot_standby_feedback = on\n"
        )
        system.write_service_file(self.data / "stack.conf", settings)
        log(f"starting the replica on {self.port}")
        pg_ctl = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file)]
        system.run_as_service([*pg_ctl, "-w", "-t", "60", "start"], log_file=self.log_file)

    @property
    def _conninfo(self) -> str:
        return (
            f"host={self.config.host} port={self.primary_port} user=postgres "
            f"password={self.config.secrets.postgres} application_name={SLOT}"
        )

    def _follow_primary(self) -> None:
        """Where to stream from, as of now (the primary's port may have changed since the
        clone): postgresql.auto.conf, which pg_basebackup -R wrote and which wins over
        every other file."""
        auto = self.data / "postgresql.auto.conf"
        kept = [
            line
            for line in auto.read_text().splitlines()
            if not line.startswith(("primary_conninfo", "primary_slot_name"))
        ]
        kept += [f"primary_conninfo = '{self._conninfo}'", f"primary_slot_name = '{SLOT}'"]
        system.write_service_file(auto, "\n".join(kept) + "\n")

    def _clone(self) -> None:
        log(f"pg_basebackup from the primary into {self.data}")
        with connect(self.primary_url) as conn:  # a slot left by an earlier clone goes
            conn.execute(
                sql.SQL(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE slot_name = {}"
                ).format(sql.Literal(SLOT))
            )
        system.run_as_service(
            [
                str(POSTGRES_BIN / "pg_basebackup"),
                *("-d", self._conninfo, "-D", str(self.data), "-R", "-X", "stream"),
                *("-C", "-S", SLOT, "--checkpoint", "fast"),
            ],
            log_file=self.log_file,
        )

    def after_ready(self) -> None:
        """Roles, database and schema all come from the primary's WAL."""


@dataclass(frozen=True)
class ReplicaPgBouncer(PgBouncer):
    """The stack's PgBouncer, configured for the replica: the API hosts' read pool."""

    name: str = "pgbouncer-replica"
    port_variable: str = "CLUSTER_REPLICA_PGBOUNCER_PORT"

    @property
    def port(self) -> int:
        return self.config.ports.pgbouncer

    def after_ready(self) -> None:
        """A read queued here longer than REPLICA_QUERY_WAIT_S (the replica stopped, or its
        pool busy) fails, and the API runs it on the primary (app/replicas.py) within the
        request's 5 s deadline; the primary's PgBouncer keeps the stack's 5 s."""
        ini = self.dir / "pgbouncer.ini"
        text = ini.read_text()
        wanted = re.sub(
            r"^query_wait_timeout = \d+$",
            f"query_wait_timeout = {REPLICA_QUERY_WAIT_S}",
            text,
            flags=re.MULTILINE,
        )
        if wanted != text and (pid := self.pid()) is not None:
            system.write_service_file(ini, wanted)
            os.kill(pid, signal.SIGHUP)  # PgBouncer rereads its ini, connections stay


@dataclass(frozen=True)
class SharedRedis(Redis):
    """The stack's Redis on the bridge address. Without a password, Redis's protected mode
    refuses every client but loopback: the hosts' addresses are not loopback, and only this
    machine and its namespaces reach the bridge."""

    def start(self) -> None:
        system.make_service_dir(self.dir)
        conf = render("redis.conf", {"HOST": self.config.host, "PORT": self.port, "DIR": self.dir})
        system.write_service_file(self.dir / "redis.conf", conf + "\nprotected-mode no\n")
        log(f"starting Redis on {self.config.host}:{self.port}")
        system.run_as_service(
            ["redis-server", str(self.dir / "redis.conf")], log_file=self.log_file
        )


@dataclass(frozen=True)
class HostApi(Api):
    """The stack's API (uvicorn --workers W), run inside one host's namespace on its
    address; nginx, on the bridge's address, is the proxy it trusts."""

    network: Network | None = None
    host: int = 1

    @property
    def port(self) -> int:
        return self.config.ports.api

    @property
    def listen_host(self) -> str:
        assert self.network is not None  # noqa: S101 - always given
        return self.network.address(self.host)

    @property
    def proxy(self) -> str:
        assert self.network is not None  # noqa: S101
        return self.network.gateway

    def command(self) -> list[str]:
        assert self.network is not None  # noqa: S101
        return self.network.in_namespace(self.host, super().command())

    def kill(self) -> None:
        """The host fails: every process in its namespace gets SIGKILL at once."""
        assert self.network is not None  # noqa: S101
        pids = self.network.pids(self.host)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log(f"{self.name}: killed {len(pids)} processes")


@dataclass(frozen=True)
class ClusterNginx(Nginx):
    """The stack's nginx, balancing over every host: least connections, each host with its
    share of the admission limit and a passive health check."""

    network: Network | None = None

    def api_servers(self) -> list[str]:
        assert self.network is not None  # noqa: S101
        max_conns = self.config.sizing.upstream_max_conns  # what one host's workers hold
        return ["least_conn;"] + [
            f"server {address}:{self.config.ports.api} max_conns={max_conns} "
            f"max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;"
            for address in self._addresses()
        ]

    def probe_servers(self) -> list[str]:
        return [
            f"server {address}:{self.config.ports.api} max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;"
            for address in self._addresses()
        ]

    def _addresses(self) -> list[str]:
        assert self.network is not None  # noqa: S101
        return [self.network.address(host) for host in range(1, self.network.hosts + 1)]
