"""The web tier: the API workers (uvicorn) and nginx in front of them."""

# ruff: noqa: S603 - runs the stack's own programs (uvicorn, nginx, openssl)

import math
import os
import shutil
import signal
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scripts.stack import system
from scripts.stack.base import Component, http_ok
from scripts.stack.config import ROOT, render
from scripts.stack.haproxy import frontend_maxconn
from scripts.stack.system import log
from scripts.stack.worker import import_chunk_idle_s, import_max_bytes


@dataclass(frozen=True)
class Api(Component):
    """`uvicorn --workers K`: uvicorn's supervisor restarts a worker that dies (even by
    SIGKILL) or stops answering its health pings; SIGTERM drains in-flight requests for up to
    --timeout-graceful-shutdown seconds. No gunicorn, no supervisor of our own needed."""

    name: str = "api"
    port_variable: str = "STACK_API_PORT"

    def pid(self) -> int | None:
        return system.read_pid(self.dir / "api.pid", "uvicorn", f"--port\0{self.port}\0")

    @property
    def listen_host(self) -> str:
        """Where uvicorn listens (an API host of `make cluster` has an address of its own)."""
        return self.config.host

    @property
    def proxy(self) -> str:
        """nginx's address as the API sees it: the only peer whose X-Forwarded-For it trusts."""
        return "127.0.0.1"

    def command(self) -> list[str]:
        config, sizing = self.config, self.config.sizing
        return [
            str(Path(system.python()).parent / "uvicorn"),
            *("app.main:create_app", "--factory"),
            *("--host", self.listen_host, "--port", str(self.port)),
            *("--workers", str(sizing.workers)),
            *("--loop", "uvloop", "--http", "httptools"),
            # Small: nginx's max_conns bounds what it sends, so no queue hides in front of the
            # workers (STACK_UPSTREAM_MAX_CONNS, deploy/stack/README.md).
            *("--backlog", str(sizing.api_backlog)),
            *("--timeout-graceful-shutdown", str(config.graceful_shutdown_s)),
            # How long a new worker may take to start (reload) and a live one to answer the
            # supervisor's ping before it is replaced; 5s (the default) is too short for a
            # cold start on a busy 2-CPU machine.
            *("--timeout-worker-healthcheck", "20"),
            # Longer than nginx's upstream keepalive_timeout (60s), see deploy/stack/nginx.conf.
            *("--timeout-keep-alive", "75"),
            *("--proxy-headers", "--forwarded-allow-ips", self.proxy),
            *("--no-access-log", "--no-server-header", "--log-level", config.log_level.lower()),
        ]

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config, sizing = self.config, self.config.sizing
        command = self.command()
        via = "straight to PostgreSQL" if config.api_database == "direct" else "via PgBouncer"
        log(
            f"starting {sizing.workers} API workers on {self.port} "
            f"(DB pool {sizing.db_pool_size}+{sizing.db_max_overflow} each, {via})"
        )
        # Prometheus multiprocess mode (app/observability/metrics.py): every worker writes its
        # samples here and /metrics merges them; emptied before the first worker starts.
        metrics_dir = self.dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        with self.log_file.open("ab") as output:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=os.environ | config.api_env() | {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `make stack`; its own process group
            )
        (self.dir / "api.pid").write_text(f"{process.pid}\n")

    def ready(self) -> bool:
        return http_ok(f"http://{self.listen_host}:{self.port}/readyz")

    def reload(self, pid: int) -> None:
        """SIGHUP: uvicorn starts a fresh worker, waits until it is ready, then retires an old
        one, worker by worker; the listening socket stays open, so no request is refused."""
        log(f"replacing API workers one by one (pid {pid})")
        os.kill(pid, signal.SIGHUP)

    def stop(self, pid: int) -> None:
        log(f"stopping API workers (draining up to {self.config.graceful_shutdown_s}s)")
        system.stop_process(pid, self.name, signal.SIGTERM, self.config.graceful_shutdown_s + 10)


@dataclass(frozen=True)
class Nginx(Component):
    name: str = "nginx"
    port_variable: str = "STACK_HTTP_PORT"

    def pid(self) -> int | None:
        return system.read_pid(self.dir / "nginx.pid", f"nginx -p {self.dir}/")

    def command(self) -> list[str]:
        conf = self.dir / "nginx.conf"
        return ["nginx", "-p", f"{self.dir}/", "-c", str(conf), "-e", str(self.dir / "error.log")]

    @property
    def log_file(self) -> Path:
        return self.dir / "error.log"

    @property
    def logs(self) -> tuple[Path, ...]:
        return (self.log_file, self.dir / "access.log")

    @property
    def port(self) -> int:
        return self.config.ports.http

    def start(self) -> None:
        config = self.config
        system.check_port_free(config.host, config.ports.https, "nginx", "STACK_HTTPS_PORT")
        self._write_config()
        log(f"starting nginx on {config.ports.http} (HTTP/1.1), {config.ports.https} (TLS, HTTP/2)")
        self._run([])

    def reload(self, pid: int) -> None:
        """Re-render the config and let nginx swap workers gracefully (`nginx -s reload`)."""
        self._write_config()
        log(f"reloading nginx (pid {pid})")
        self._run(["-s", "reload"])

    def _write_config(self) -> None:
        config = self.config
        for sub in ("tmp", "tls", "cache"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._certificate()
        nofile = system.raise_nofile_limit()
        conf = render(
            "nginx.conf",
            {
                "DIR": self.dir,
                "HOST": config.host,
                "HTTP_PORT": config.ports.http,
                "HTTPS_PORT": config.ports.https,
                "API_SERVERS": "\n        ".join(self.api_servers()),
                "PROBE_SERVERS": "\n        ".join(self.probe_servers()),
                "MAX_BODY_BYTES": config.max_body_bytes,
                "IMPORT_MAX_BYTES": import_max_bytes(),
                "IMPORT_CHUNK_IDLE_S": import_chunk_idle_s(),
                "PROXY_READ_TIMEOUT_S": math.ceil(config.sizing.db_pool_timeout) + 20,
                # STACK_MICROCACHE=0: every anonymous GET reaches the API (the baseline).
                "MICROCACHE": "conduit_micro"
                if os.environ.get("STACK_MICROCACHE") != "0"
                else "off",
                "NOFILE": nofile,
                "WORKER_CONNECTIONS": min(16_384, nofile - 64),
            },
        )
        (self.dir / "nginx.conf").write_text(conf)

    def api_servers(self) -> list[str]:
        """The `server` lines of the API's upstream group: the API, or HAProxy's line in front
        of it (STACK_ADMISSION=haproxy, scripts/stack/haproxy.py)."""
        max_conns, port = self.config.sizing.upstream_max_conns, self.config.ports.api
        if self.config.admission == "haproxy":
            # Only what HAProxy could not hold open is refused here, at once: no connection
            # waits unseen in its listen backlog.
            max_conns = max_conns or frontend_maxconn()
            port = self.config.ports.haproxy
        return [f"server 127.0.0.1:{port} max_conns={max_conns};"]

    def probe_servers(self) -> list[str]:
        return [f"server 127.0.0.1:{self.config.ports.api};"]

    def _run(self, args: list[str]) -> None:
        """`nginx -t` first, so a bad config is reported before anything changes."""
        with self.log_file.open("ab") as output:
            for command in ([*self.command(), "-t", "-q"], [*self.command(), *args]):
                subprocess.run(
                    command, check=True, stdin=subprocess.DEVNULL, stdout=output, stderr=output
                )

    def _certificate(self) -> None:
        cert, key = self.dir / "tls" / "cert.pem", self.dir / "tls" / "key.pem"
        if cert.exists() and key.exists():
            return
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825"),
                *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
                *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            ],
            check=True,
            capture_output=True,
        )
        key.chmod(0o600)

    def ready(self) -> bool:
        host, ports = self.config.host, self.config.ports
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # our own self-signed certificate
        return http_ok(f"http://{host}:{ports.http}/readyz") and http_ok(
            f"https://{host}:{ports.https}/readyz", insecure
        )

    def stop(self, pid: int) -> None:
        # SIGQUIT: graceful, finishes the requests in flight.
        system.stop_process(pid, self.name, signal.SIGQUIT, 15)
