"""What every component shares: `up` starts it unless it runs, then waits until it answers,
so running `up` twice is harmless; `down` stops it if it runs."""

import signal
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg

from scripts.stack import system
from scripts.stack.config import StackConfig
from scripts.stack.system import log


@dataclass(frozen=True)
class Component:
    config: StackConfig
    name: str = ""
    port_variable: str = ""
    start_timeout_s: float = 60

    @property
    def dir(self) -> Path:
        return self.config.dir(self.name)

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def logs(self) -> tuple[Path, ...]:
        """The files this component appends to for as long as it runs."""
        return (self.log_file,)

    @property
    def port(self) -> int:
        port: int = getattr(self.config.ports, self.name.replace("-", "_"))
        return port

    def rotate_logs(self) -> None:
        """Keep the previous run's logs as `<name>.1`, drop older ones: disk use stays bounded
        by two runs (one `make bench` leaves ~1-2 GB of nginx logs while it sheds load)."""
        for path in self.logs:
            if path.exists() and path.stat().st_size > 0:
                path.replace(path.with_name(path.name + ".1"))

    def pid(self) -> int | None:
        """The pid of this stack's process, if it runs."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def after_ready(self) -> None:
        """Idempotent set-up once the component answers (roles, migrations)."""

    def stop(self, pid: int) -> None:
        system.stop_process(pid, self.name, signal.SIGTERM, 15)

    def reload(self, pid: int) -> None:
        """Pick up new code or configuration without downtime, where the component can."""
        log(f"{self.name}: nothing to reload (pid {pid}); restart it with down + up")

    def up(self) -> None:
        if (pid := self.pid()) is not None:
            log(f"{self.name} already running (pid {pid})")
        else:
            system.check_port_free(self.config.host, self.port, self.name, self.port_variable)
            self.rotate_logs()
            self.start()
        system.require(self.ready, self.start_timeout_s, self.name, self.log_file)
        self.after_ready()

    def reload_if_running(self) -> None:
        if (pid := self.pid()) is None:
            log(f"{self.name} not running")
            return
        self.reload(pid)

    def down(self) -> None:
        if (pid := self.pid()) is None:
            log(f"{self.name} not running")
            return
        self.stop(pid)


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(url, connect_timeout=2, autocommit=True, **kwargs)  # type: ignore[arg-type]


def answers(url: str, query: str = "SELECT 1", **kwargs: object) -> bool:
    try:
        with connect(url, **kwargs) as conn:
            conn.execute(query)
    except psycopg.Error:
        return False
    return True


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - our own http(s) URL
            status: int = response.status
    except (urllib.error.URLError, OSError):
        return False
    return status == 200
