"""The data tier: PostgreSQL (roles, database, migrations), PgBouncer in front of it, and two
Redis: one that never evicts (job queue, rate limits), one for the read cache that may."""

# ruff: noqa: S603 - runs the stack's own programs (pg_ctl, initdb, pgbouncer, redis-server)

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from psycopg import sql

from scripts.stack import system
from scripts.stack.base import Component, answers, connect
from scripts.stack.config import APP_ROLE, DATABASE, OWNER_ROLE, PGBOUNCER_ADMIN, ROOT, render
from scripts.stack.system import POSTGRES_BIN, log

# The app role gets DML on whatever the owner's migrations create, now and later.
APP_PRIVILEGES = (
    "GRANT USAGE ON SCHEMA public TO {app}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}",
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
    " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
    " GRANT USAGE, SELECT ON SEQUENCES TO {app}",
)


@dataclass(frozen=True)
class Postgres(Component):
    name: str = "postgres"
    port_variable: str = "STACK_POSTGRES_PORT"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def pid(self) -> int | None:
        return system.read_pid(self.data / "postmaster.pid", str(self.data))

    def start(self) -> None:
        system.make_service_dir(self.dir)
        system.check_service_can_reach(self.dir)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        sizing = self.config.sizing
        settings = render(
            "postgresql.conf",
            {
                "HOST": self.config.host,
                "PORT": self.port,
                "SERVER_POOL": sizing.server_pool,
                "MAX_CONNECTIONS": sizing.postgres_max_connections,
            },
        )
        system.write_service_file(self.data / "stack.conf", settings)
        system.write_service_file(self.data / "pg_hba.conf", render("pg_hba.conf", {}))
        log(
            f"starting PostgreSQL on {self.port} (max_connections {sizing.postgres_max_connections})"
        )
        pg_ctl = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file)]
        system.run_as_service([*pg_ctl, "-w", "-t", "60", "start"], log_file=self.log_file)

    def _initdb(self) -> None:
        log(f"initdb {self.data}")
        password_file = self.dir / "initdb.pw"
        system.write_service_file(password_file, self.config.secrets.postgres + "\n")
        try:
            system.run_as_service(
                [
                    str(POSTGRES_BIN / "initdb"),
                    *("-D", str(self.data), "-U", "postgres", "--pwfile", str(password_file)),
                    *("--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C.UTF-8"),
                ],
                log_file=self.log_file,
            )
        finally:
            password_file.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude 'stack.conf'  # scripts/stack: ports, sizing, logging\n")

    def ready(self) -> bool:
        return answers(self.config.superuser_url)

    def after_ready(self) -> None:
        """Roles, database, migrations (as the owner, never through PgBouncer), privileges;
        each step is idempotent, so it runs on every `up`."""
        with connect(self.config.superuser_url) as conn:
            secrets = self.config.secrets
            for role, password in ((OWNER_ROLE, secrets.owner), (APP_ROLE, secrets.app)):
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
                verb = "ALTER" if exists.fetchone() else "CREATE"
                conn.execute(
                    sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
            conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(OWNER_ROLE)))
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
            if not exists.fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(DATABASE), sql.Identifier(OWNER_ROLE)
                    )
                )
        url = self.config.direct_database_url.replace("postgresql://", "postgresql+psycopg://", 1)
        migrate = f"from app.migrate import upgrade; upgrade({url!r})"
        subprocess.run([system.python(), "-c", migrate], cwd=ROOT, check=True)
        with connect(self.config.direct_database_url) as conn:
            for statement in APP_PRIVILEGES:
                conn.execute(
                    sql.SQL(statement).format(
                        app=sql.Identifier(APP_ROLE), owner=sql.Identifier(OWNER_ROLE)
                    )
                )

    def stop(self, pid: int) -> None:
        log("stopping PostgreSQL")
        pg_ctl = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data)]
        system.run_as_service(
            [*pg_ctl, "-m", "fast", "-w", "-t", "60", "stop"], log_file=self.log_file, check=False
        )
        if system.alive(pid):
            system.stop_process(pid, self.name, signal.SIGQUIT, 5)


@dataclass(frozen=True)
class PgBouncer(Component):
    name: str = "pgbouncer"
    port_variable: str = "STACK_PGBOUNCER_PORT"

    def pid(self) -> int | None:
        return system.read_pid(self.dir / "pgbouncer.pid", str(self.dir / "pgbouncer.ini"))

    def start(self) -> None:
        system.make_service_dir(self.dir)
        config, secrets, sizing = self.config, self.config.secrets, self.config.sizing
        users = {APP_ROLE: secrets.app, PGBOUNCER_ADMIN: secrets.pgbouncer_admin}
        userlist = "".join(f'"{user}" "{password}"\n' for user, password in users.items())
        system.write_service_file(self.dir / "userlist.txt", userlist)
        ini = render(
            "pgbouncer.ini",
            {
                "HOST": config.host,
                "PORT": self.port,
                "POSTGRES_PORT": config.ports.postgres,
                "DATABASE": DATABASE,
                "DIR": self.dir,
                "ADMIN_USER": PGBOUNCER_ADMIN,
                "MAX_CLIENT_CONN": sizing.max_client_conn,
                "SERVER_POOL": sizing.server_pool,
                "API_CLIENTS": sizing.api_client_connections,
            },
        )
        system.write_service_file(self.dir / "pgbouncer.ini", ini)
        log(f"starting PgBouncer on {self.port} (server pool {sizing.server_pool})")
        system.run_as_service(
            ["pgbouncer", "-d", str(self.dir / "pgbouncer.ini")], log_file=self.log_file
        )

    def ready(self) -> bool:
        # The admin console speaks the simple query protocol only: ClientCursor sends that.
        admin = answers(
            self.config.pgbouncer_admin_url, "SHOW VERSION", cursor_factory=psycopg.ClientCursor
        )
        return admin and answers(self.config.database_url)

    def stop(self, pid: int) -> None:
        # SIGINT: safe shutdown, waits for transactions in flight; SIGKILL after the grace.
        system.stop_process(pid, self.name, signal.SIGINT, 10)


@dataclass(frozen=True)
class Redis(Component):
    """The job queue and the rate-limit counters (REDIS_URL): `maxmemory-policy noeviction`."""

    name: str = "redis"
    port_variable: str = "STACK_REDIS_PORT"
    template: str = "redis.conf"

    def pid(self) -> int | None:
        return system.read_pid(
            self.dir / "redis.pid", f"redis-server {self.config.host}:{self.port}"
        )

    def start(self) -> None:
        system.make_service_dir(self.dir)
        conf = render(self.template, {"HOST": self.config.host, "PORT": self.port, "DIR": self.dir})
        system.write_service_file(self.dir / "redis.conf", conf)
        log(f"starting {self.name} (Redis) on {self.port}")
        system.run_as_service(
            ["redis-server", str(self.dir / "redis.conf")], log_file=self.log_file
        )

    def ready(self) -> bool:
        client = redis.Redis(host=self.config.host, port=self.port, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


@dataclass(frozen=True)
class RedisCache(Redis):
    """The read cache, its leases and its invalidation channel (REDIS_CACHE_URL): a second
    redis-server that may evict, `volatile-lru` only (deploy/stack/redis-cache.conf)."""

    name: str = "redis-cache"
    port_variable: str = "STACK_REDIS_CACHE_PORT"
    template: str = "redis-cache.conf"
