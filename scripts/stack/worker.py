"""The job worker (app/workers): `python -m app.workers.main --supervise`, which starts the
SAQ worker as a child and starts it again whenever it dies (kill -9 included). Same
environment as the API (PgBouncer, Redis, secrets), with a small pool of its own."""

# ruff: noqa: S603 - runs the project's own worker

import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass

import redis

from scripts.stack import system
from scripts.stack.base import Component
from scripts.stack.config import ROOT
from scripts.stack.system import log

# Client connections the worker adds to PgBouncer's (within PGBOUNCER_CLIENT_RESERVE): one
# import batch or delivery transaction each at a time, whatever WORKER_CONCURRENCY is.
WORKER_DB_POOL_SIZE = 4
QUEUE_NAME = "conduit"


def import_max_bytes() -> int:
    """IMPORT_MAX_BYTES as the API reads it (app/config.py): nginx's limit for /api/imports."""
    return int(os.environ.get("IMPORT_MAX_BYTES") or 100 * 1024 * 1024)


def import_chunk_idle_s() -> int:
    """IMPORT_CHUNK_IDLE_S as the API reads it (app/config.py), in whole seconds: how long
    nginx waits between two reads of an /api/imports body."""
    return math.ceil(float(os.environ.get("IMPORT_CHUNK_IDLE_S") or 30))


@dataclass(frozen=True)
class JobWorker(Component):
    name: str = "worker"
    start_timeout_s: float = 60

    def pid(self) -> int | None:
        return system.read_pid(self.dir / "worker.pid", "app.workers.main", "--supervise")

    def up(self) -> None:  # no port of its own to check
        if (pid := self.pid()) is not None:
            log(f"{self.name} already running (pid {pid})")
        else:
            self.start()
        system.require(self.ready, self.start_timeout_s, self.name, self.log_file)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        env = os.environ | self.config.api_env() | {"DB_POOL_SIZE": str(WORKER_DB_POOL_SIZE)}
        env["QUEUE_NAME"] = env.get("QUEUE_NAME") or QUEUE_NAME
        log(f"starting the job worker (DB pool {WORKER_DB_POOL_SIZE}, restarted if it dies)")
        with self.log_file.open("ab") as output:
            process = subprocess.Popen(
                [system.python(), "-m", "app.workers.main", "--supervise"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `make stack`
            )
        (self.dir / "worker.pid").write_text(f"{process.pid}\n")

    def ready(self) -> bool:
        """A live worker of this queue has reported in to Redis (SAQ's worker stats)."""
        client = redis.Redis(host=self.config.host, port=self.config.ports.redis, socket_timeout=1)
        queue = os.environ.get("QUEUE_NAME") or QUEUE_NAME
        try:
            return bool(client.zcount(f"saq:{queue}:stats", int(time.time() * 1000), "+inf"))
        except redis.RedisError:
            return False
        finally:
            client.close()

    def reload(self, pid: int) -> None:
        """SIGHUP: the supervisor stops its worker gracefully and starts one with new code."""
        log(f"restarting the job worker on new code (pid {pid})")
        os.kill(pid, signal.SIGHUP)

    def stop(self, pid: int) -> None:
        # SIGTERM: running jobs get 20s to finish, then are cancelled (and retried later).
        system.stop_process(pid, self.name, signal.SIGTERM, 40)
