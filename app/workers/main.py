"""`python -m app.workers.main`: the job worker (SAQ), with its own engine, pool and Redis
client from Settings. SIGTERM or SIGINT: stop taking jobs, let running ones finish for up to
SHUTDOWN_GRACE_S (20), then cancel them (they are retried; every transaction they had not
committed rolls back).

`--supervise` runs the worker as a child and starts it again when it dies (`make stack`).
"""

import argparse
import asyncio
import logging
import signal
import subprocess
import sys
import time
from types import FrameType

import httpx
import uvloop
from prometheus_client import start_http_server
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import CronJob, Worker
from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from saq.types import TimersDict

from app import replicas
from app.cache.store import Cache
from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.observability import logs, metrics
from app.redis import make_cache_redis
from app.transaction import AfterCommit
from app.webhooks import targets
from app.workers import jobs
from app.workers.jobs import Ctx

log = logging.getLogger("conduit.worker")

SHUTDOWN_GRACE_S = 20
DEQUEUE_BACKOFF_S = 1.0
SWEEP_ABORT_WAIT_S = 2.0


class WorkerQueue(RedisQueue):
    """SAQ's Redis queue, but a dequeue that fails (Redis down) waits a second instead of
    letting every worker task spin on connection errors, and a quicker sweep."""

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:  # noqa: ASYNC109 - SAQ signature
        try:
            return await super().dequeue(timeout, poll_interval)
        except (RedisError, OSError) as exc:
            log.warning("dequeue failed (%s); retrying in %.0fs", type(exc).__name__, 1)
            await asyncio.sleep(DEQUEUE_BACKOFF_S)
            return None

    async def sweep(self, lock: int = 60, abort: float = SWEEP_ABORT_WAIT_S) -> list[str]:
        """SAQ's sweep, waiting less for a stuck job's worker to confirm the abort: a worker
        that is alive checks every second, and a dead one never answers."""
        return await super().sweep(lock, abort)


class ConduitWorker(Worker[Ctx]):
    """SAQ's worker, whose shutdown does not wait out the upkeep loops' sleeps (up to the
    sweep interval): they are cancelled at once; running jobs still get the grace period."""

    async def stop(self) -> None:
        self.event.set()
        for task in list(self.tasks):
            if task.get_name() != "process":
                task.cancel()
        await super().stop()


def build_worker(settings: Settings) -> Worker[Ctx]:
    if settings.redis_url is None:
        raise SystemExit("REDIS_URL is required by the job worker")
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, health_check_interval=30)
    queue = WorkerQueue(redis, name=settings.queue_name)
    cache_redis = make_cache_redis(settings, shared=redis)

    async def startup(ctx: Ctx) -> None:
        engine = make_engine(settings)
        ctx["settings"] = settings
        ctx["engine"] = engine
        ctx["sessions"] = make_sessionmaker(engine)
        # Imports add articles and tags: their commits bump the cache versions readers check,
        # in the cache's Redis (REDIS_CACHE_URL, else this one).
        cache = Cache(cache_redis if settings.cache_enabled else None)
        # With read replicas, commits that change reads record their WAL position too.
        positions = replicas.write_positions(settings, redis, engine)
        ctx["effects"] = AfterCommit(
            cache=cache, jobs=queue, settings=settings, positions=positions
        )
        ctx["http"] = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,  # a redirect could point anywhere: it is a failed attempt
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        ctx["targets"] = targets.policy(settings)
        ctx["queue"] = queue
        log.info(
            "worker started: queue %r, concurrency %d", queue.name, settings.worker_concurrency
        )

    async def shutdown(ctx: Ctx) -> None:
        await ctx["http"].aclose()
        await ctx["engine"].dispose()
        if cache_redis is not None and cache_redis is not redis:
            await cache_redis.aclose()
        metrics.withdraw_this_process()
        log.info("worker stopped")

    return ConduitWorker(
        queue,
        functions=jobs.FUNCTIONS,
        cron_jobs=cron_jobs(settings),
        concurrency=settings.worker_concurrency,
        startup=startup,
        shutdown=shutdown,
        before_process=_before,
        after_process=_after,
        # Shutdown waits for the upkeep loops' sleeps: keep them no longer than the sweep's.
        timers=TimersDict(
            schedule=1,
            worker_info=min(10, settings.worker_sweep_s),
            sweep=settings.worker_sweep_s,
            abort=1,
        ),
        dequeue_timeout=1.0,
        shutdown_grace_period_s=SHUTDOWN_GRACE_S,
    )


def cron_jobs(settings: Settings) -> list[CronJob[Ctx]]:
    """The periodic jobs. SAQ gives each a unique key, so however many workers run, one
    of them runs each tick."""
    periodic = [
        CronJob(jobs.relay, cron=f"* * * * * */{settings.relay_interval_s}", timeout=60),
        CronJob(jobs.purge, cron="* * * * *", timeout=300),
    ]
    if settings.counts_check_cron:
        # One attempt: a check that failed is not worth a second full scan at once.
        timeout = int(jobs.COUNTS_CHECK_TIMEOUT_S) + 60
        periodic.append(
            CronJob(jobs.check_counts, cron=settings.counts_check_cron, timeout=timeout, retries=1)
        )
    return periodic


async def _before(ctx: Ctx) -> None:
    if (job := ctx.get("job")) is not None:
        ready_ms = max(job.queued, int(job.scheduled * 1000))
        waited = max(0, job.started - ready_ms) / 1000
        metrics.JOB_QUEUE_WAIT.labels(job=job.function).observe(waited)


async def _after(ctx: Ctx) -> None:
    if (job := ctx.get("job")) is None:
        return
    outcome = {Status.COMPLETE: "success", Status.QUEUED: "retry"}.get(job.status, "failure")
    metrics.JOBS.labels(job=job.function, outcome=outcome).inc()
    if job.started:
        metrics.JOB_DURATION.labels(job=job.function).observe(
            max(0, int(time.time() * 1000) - job.started) / 1000
        )


async def serve(settings: Settings) -> None:
    worker = build_worker(settings)
    await worker.queue.connect()
    try:
        await worker.start()
    finally:
        await worker.queue.disconnect()


def supervise() -> int:
    """Run the worker as a child process; start it again when it dies (backoff 1-30s);
    SIGTERM/SIGINT go to the child, and then we exit; SIGHUP restarts the child (new code)."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def restart(_: int, __: FrameType | None) -> None:  # SIGHUP: new code, same supervisor
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, restart)
    delay = 1.0
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "app.workers.main"])
        code = child.wait()
        if stopping:
            break
        if code == 0:  # stopped on purpose (SIGHUP): start the new code at once
            delay = 0.0
            continue
        delay = 1.0 if time.monotonic() - started > 60 else min(max(delay, 0.5) * 2, 30.0)
        log.warning("worker exited (%s); starting it again in %.0fs", code, delay)
        time.sleep(delay)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.workers.main", description=__doc__)
    parser.add_argument("--supervise", action="store_true", help="restart the worker on exit")
    args = parser.parse_args(argv)
    settings = Settings()
    logs.configure_logging(settings.log_level)
    if args.supervise:
        return supervise()
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
