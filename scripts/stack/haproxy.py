"""HAProxy between nginx and the API (STACK_ADMISSION=haproxy): the waiting line in front of
the API's workers, kept in C instead of in their event loops (deploy/stack/haproxy.cfg).

Reads (GET, HEAD) and writes (every other method) wait in two lines, each with its own share
of the API and its own measured rate: a write costs many reads' worth of work, so a rate
measured on one class would let a burst of the other in whole. The bound on a line follows
its class's real service rate: a newcomer is refused at once when the line ahead of it holds
more requests than the API serves of that class in WAIT_SHARE of the request budget, so what
it is let into it can expect to leave within that share; the rest of the budget is for its
service, the API's own short line and the spread of both. The rate is the API's throughput
of that class over the last second while it could not keep up (its line busy for BUSY_S),
remembered through quiet spells; it counts requests handed to the API, not requests let into
the line, so the rule's own admissions never raise it. Until a class has been measured, its
line holds at most what nginx's count rule holds (K x (MAX_IN_FLIGHT + MAX_QUEUED), at work
and waiting): the prior. `timeout queue` (QUEUE_SHARE of the budget) bounds the line in time
whatever the rate does meanwhile."""

# ruff: noqa: S603 - runs the stack's own program (haproxy)

import math
import signal
import subprocess
from dataclasses import dataclass

from scripts.stack import system
from scripts.stack.base import Component, http_ok
from scripts.stack.config import render
from scripts.stack.system import log

# Of the request budget (REQUEST_DEADLINE_S): the wait a newcomer may expect in the line, and
# the longest anyone waits there. Half mirrors the API's own rule (a request with half its
# budget left is never refused for lack of time, app/middleware/request_edge.py).
WAIT_SHARE = 0.5
QUEUE_SHARE = 0.8
MAX_RETRY_AFTER_S = 30  # as the API's (app/middleware/admission.py)
# How long the line must have been non-empty before the requests handed to the API over the
# last second (a sliding one-second window) count as its capacity: a full window of it.
BUSY_S = 2
# Descriptors beyond two per proxied request: listeners, the stats socket, the API's.
FD_RESERVE = 100


def frontend_maxconn() -> int:
    """Connections HAProxy holds open at once: two descriptors each within the hard
    RLIMIT_NOFILE, which it cannot raise where the machine denies CAP_SYS_RESOURCE, even as
    root. nginx opens one per request it passes on, and passes no more than this."""
    return max(256, (system.raise_nofile_limit() - FD_RESERVE) // 2)


def prior_rate(prior: int, maxconn: int, wait_ms: int) -> int:
    """The rate that stands in for a class not yet measured: the one at which its line may
    hold what nginx's count rule holds (`prior`, at work and waiting) less the class's own
    requests at work, so a cold burst beyond that is refused at once."""
    return max(1, (prior - maxconn) * 1000 // max(1, wait_ms))


@dataclass(frozen=True)
class HAProxy(Component):
    name: str = "haproxy"
    port_variable: str = "STACK_HAPROXY_PORT"

    @property
    def enabled(self) -> bool:
        return self.config.admission == "haproxy"

    def pid(self) -> int | None:
        return system.read_pid(self.dir / "haproxy.pid", "haproxy", str(self.dir / "haproxy.cfg"))

    def up(self) -> None:
        if self.enabled:
            super().up()
        elif (pid := self.pid()) is not None:  # left from a run with STACK_ADMISSION=haproxy
            log(f"{self.name}: not used (STACK_ADMISSION={self.config.admission}), stopping it")
            self.stop(pid)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        reads, writes = self.config.sizing.haproxy_maxconn, self.config.sizing.haproxy_write_maxconn
        log(
            f"starting HAProxy on {self.port}: {reads} reads and {writes} writes at the API at once"
        )
        self._run([])

    def reload(self, pid: int) -> None:
        """A new process takes the listener; the old one finishes its requests (-sf)."""
        self._write_config()
        log(f"reloading HAProxy (pid {pid})")
        self._run(["-sf", str(pid)])

    def stop(self, pid: int) -> None:
        # SIGUSR1: stop listening, finish the requests in flight (hard-stop-after bounds it).
        system.stop_process(pid, self.name, signal.SIGUSR1, 35)

    def ready(self) -> bool:
        return http_ok(f"http://{self.config.host}:{self.port}/readyz")

    def _run(self, args: list[str]) -> None:
        """`haproxy -c` first, so a bad config is reported before anything changes."""
        conf = str(self.dir / "haproxy.cfg")
        check = ["haproxy", "-c", "-q", "-f", conf]
        daemon = ["haproxy", "-D", "-p", str(self.dir / "haproxy.pid"), "-f", conf, *args]
        with self.log_file.open("ab") as output:
            for command in (check, daemon):
                subprocess.run(
                    command, check=True, stdin=subprocess.DEVNULL, stdout=output, stderr=output
                )

    def _write_config(self) -> None:
        config, sizing = self.config, self.config.sizing
        budget_ms = 1000 * config.request_deadline_s
        wait_ms = round(WAIT_SHARE * budget_ms)
        values = {
            "DIR": self.dir,
            "HOST": config.host,
            "PORT": self.port,
            "API_HOST": config.host,
            "API_PORT": config.ports.api,
            "MAXCONN": frontend_maxconn(),
            "READ_MAXCONN": sizing.haproxy_maxconn,
            "WRITE_MAXCONN": sizing.haproxy_write_maxconn,
            "READ_PRIOR_RATE": prior_rate(sizing.haproxy_prior, sizing.haproxy_maxconn, wait_ms),
            "WRITE_PRIOR_RATE": prior_rate(
                sizing.haproxy_prior, sizing.haproxy_write_maxconn, wait_ms
            ),
            "SERVER_TIMEOUT_S": math.ceil(sizing.db_pool_timeout) + 20,
            "WAIT_MS": wait_ms,
            "QUEUE_TIMEOUT_MS": round(QUEUE_SHARE * budget_ms),
            "MAX_RETRY_AFTER_S": MAX_RETRY_AFTER_S,
            "BUSY_S": BUSY_S,
        }
        (self.dir / "haproxy.cfg").write_text(render("haproxy.cfg", values))
