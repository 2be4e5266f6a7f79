"""python -m scripts.stack up|down|reload|status [component ...]  (make stack / make stack-down)

reload: new API code or nginx settings without downtime (API workers replaced one by one).
With STACK_VARIANT=name only `api` and `nginx` are managed: a second API (and nginx) of the
running stack on ports of its own (STACK_HTTP_PORT, STACK_API_PORT, ...), state under
$STACK_DIR/variants/name/; stack.env is left alone. The bench starts its baselines this way.
"""

import argparse
import subprocess
import sys

from scripts.stack import system
from scripts.stack.base import Component
from scripts.stack.config import StackConfig, StackError
from scripts.stack.data import PgBouncer, Postgres, Redis, RedisCache
from scripts.stack.haproxy import HAProxy
from scripts.stack.monitoring import Exporter, Prometheus
from scripts.stack.web import Api, Nginx
from scripts.stack.worker import JobWorker


def components(config: StackConfig) -> list[Component]:
    """In start order: each one needs the ones before it. A variant has only its web tier.
    HAProxy is there when STACK_ADMISSION=haproxy, or while one is left running (so that
    `down` stops it and `up` without it retires it)."""
    haproxy = HAProxy(config)
    web = [Api(config), *([haproxy] if haproxy.enabled or haproxy.pid() else []), Nginx(config)]
    if config.variant:
        return web
    return [
        *(Postgres(config), PgBouncer(config), Redis(config), RedisCache(config)),
        *web,
        JobWorker(config),
        *(Exporter(config), Prometheus(config)),
    ]


def up(config: StackConfig, chosen: list[Component], everything: bool) -> None:
    config.sizing.check()
    system.ensure_packages({"haproxy": "haproxy"} if config.admission == "haproxy" else None)
    system.raise_nofile_limit()
    config.state.mkdir(parents=True, exist_ok=True)
    config.state.chmod(0o755)  # the service user and nginx's workers traverse it
    for component in chosen:
        component.up()
    if everything:
        env = config.stack_env()
        path = config.state / "stack.env"
        path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        path.chmod(0o600)
        system.log(f"ready: {env['API_URL']} (HTTP/2: {env['API_URL_HTTPS']}); see {path}")


def down(config: StackConfig, chosen: list[Component], everything: bool) -> None:
    if everything:
        (config.state / "stack.env").unlink(missing_ok=True)
    for component in reversed(chosen):
        component.down()


def status(chosen: list[Component]) -> bool:
    healthy = True
    for component in chosen:
        pid = component.pid()
        answers = pid is not None and component.ready()
        healthy = healthy and answers
        state = (
            "not running" if pid is None else f"pid {pid}, {'ready' if answers else 'NOT READY'}"
        )
        system.log(f"{component.name:<11} {state}")
    return healthy


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "reload", "status"])
    parser.add_argument("components", nargs="*", metavar="component")
    args = parser.parse_args(argv)
    try:
        config = StackConfig.from_env()
        every = components(config)
        names = [c.name for c in every]
        if unknown := sorted(set(args.components) - set(names)):
            raise StackError(f"unknown component(s) {unknown}; choose from {names}")
        chosen = [c for c in every if not args.components or c.name in args.components]
        everything = len(chosen) == len(every) and not config.variant
        if args.command == "up":
            up(config, chosen, everything)
        elif args.command == "down":
            down(config, chosen, everything)
        elif args.command == "reload":
            for component in chosen:
                component.reload_if_running()
        else:
            return 0 if status(chosen) else 1
    except (StackError, subprocess.CalledProcessError) as exc:
        system.log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
