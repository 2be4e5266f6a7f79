"""Monitoring: the stack's exporter (PgBouncer, nginx, readiness) and Prometheus scraping it all.

Prometheus scrapes the API's /metrics on the uvicorn port (one target: every worker's samples
are merged by whichever worker answers, app/observability/metrics.py), the exporter, and
itself; its alert rules are deploy/prometheus/alerts.yml.
"""

# ruff: noqa: S603 - runs the stack's own programs (prometheus, the exporter)

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scripts.stack import system
from scripts.stack.base import Component, http_ok
from scripts.stack.config import ROOT, StackConfig, render
from scripts.stack.system import log

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


def _spawn(command: list[str], log_file: Path, pid_file: Path, env: dict[str, str]) -> None:
    """A detached daemon of this stack (own session), output to log_file, pid to pid_file."""
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=os.environ | env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")


@dataclass(frozen=True)
class Exporter(Component):
    """`python -m app.observability.exporter`: PgBouncer's SHOW POOLS/STATS, nginx's
    stub_status and the API's /readyz, as Prometheus metrics."""

    name: str = "exporter"
    port_variable: str = "STACK_EXPORTER_PORT"

    def pid(self) -> int | None:
        return system.read_pid(
            self.dir / "exporter.pid", "app.observability.exporter", f"--port\0{self.port}\0"
        )

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.config
        command = [
            *(system.python(), "-m", "app.observability.exporter"),
            *("--host", config.host, "--port", str(self.port)),
        ]
        env = {
            "PGBOUNCER_ADMIN_URL": config.pgbouncer_admin_url,  # not on the command line: ps
            "NGINX_STATUS_URL": f"http://{config.host}:{config.ports.http}/nginx_status",
            "API_READY_URL": f"http://{config.host}:{config.ports.api}/readyz",
        }
        log(f"starting the exporter (PgBouncer, nginx, readiness) on {self.port}")
        _spawn(command, self.log_file, self.dir / "exporter.pid", env)

    def ready(self) -> bool:
        return http_ok(f"http://{self.config.host}:{self.port}/metrics")


@dataclass(frozen=True)
class Prometheus(Component):
    name: str = "prometheus"
    port_variable: str = "STACK_PROMETHEUS_PORT"

    def pid(self) -> int | None:
        return system.read_pid(
            self.dir / "prometheus.pid", "prometheus", f"--web.listen-address={self.address}"
        )

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def start(self) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self._write_config()
        command = [
            "prometheus",
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            "--storage.tsdb.retention.time=7d",
            f"--web.listen-address={self.address}",
        ]
        log(f"starting Prometheus on {self.port}")
        _spawn(command, self.log_file, self.dir / "prometheus.pid", {})

    def _write_config(self) -> None:
        (self.dir / "prometheus.yml").write_text(prometheus_config(self.config))

    def ready(self) -> bool:
        return http_ok(f"http://{self.address}/-/ready")

    def reload(self, pid: int) -> None:
        """SIGHUP: Prometheus re-reads its configuration and rules."""
        self._write_config()
        log(f"reloading Prometheus (pid {pid})")
        os.kill(pid, signal.SIGHUP)


def prometheus_config(config: StackConfig) -> str:
    ports = config.ports
    return render(
        "prometheus.yml",
        {
            "HOST": config.host,
            "API_PORT": ports.api,
            "EXPORTER_PORT": ports.exporter,
            "PROMETHEUS_PORT": ports.prometheus,
            "RULES": RULES,
        },
    )
