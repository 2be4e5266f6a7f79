"""python -m scripts.cluster up|down|status|kill [component ...]  (make cluster / make cluster-down)

Components, in start order: postgres, pgbouncer, replica, pgbouncer-replica, redis,
api1 .. apiN (one per host), nginx, worker. `up` and `down` without components also create
and remove the network (bridge, namespaces); `kill apiN` SIGKILLs every process of host N
(a host failure, for tests; `up apiN` brings it back).
"""

import argparse
import subprocess
import sys

from scripts.cluster.config import ClusterConfig
from scripts.cluster.network import Network
from scripts.cluster.nodes import (
    ClusterNginx,
    HostApi,
    Primary,
    Replica,
    ReplicaPgBouncer,
    SharedRedis,
)
from scripts.stack import system
from scripts.stack.base import Component
from scripts.stack.config import StackError
from scripts.stack.data import PgBouncer
from scripts.stack.worker import JobWorker


def network(config: ClusterConfig) -> Network:
    return Network(config.prefix, config.subnet, config.hosts)


def components(config: ClusterConfig) -> list[Component]:
    data, replica, net = config.data, config.replica, network(config)
    return [
        Primary(data, subnet=config.subnet),
        PgBouncer(data),
        Replica(replica, primary_url=data.superuser_url, primary_port=data.ports.postgres),
        ReplicaPgBouncer(replica),
        SharedRedis(data),
        *(HostApi(data, name=f"api{n}", network=net, host=n) for n in range(1, config.hosts + 1)),
        ClusterNginx(config.edge, network=net),
        JobWorker(data),
    ]


def up(config: ClusterConfig, chosen: list[Component], everything: bool) -> None:
    config.data.sizing.check()
    system.ensure_packages()
    system.raise_nofile_limit()
    config.state.mkdir(parents=True, exist_ok=True)
    config.state.chmod(0o755)  # the service user and nginx's workers traverse it
    network(config).up()
    for component in chosen:
        component.up()
    if everything:
        net = network(config)
        hosts = [
            f"http://{net.address(n)}:{config.data.ports.api}" for n in range(1, config.hosts + 1)
        ]
        env = config.cluster_env(hosts)
        path = config.state / "cluster.env"
        path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        path.chmod(0o600)
        system.log(f"ready: {env['API_URL']} over {config.hosts} hosts; see {path}")


def down(config: ClusterConfig, chosen: list[Component], everything: bool) -> None:
    if everything:
        (config.state / "cluster.env").unlink(missing_ok=True)
    for component in reversed(chosen):
        component.down()
    if everything:
        network(config).down()


def status(chosen: list[Component]) -> bool:
    healthy = True
    for component in chosen:
        pid = component.pid()
        answers = pid is not None and component.ready()
        healthy = healthy and answers
        state = (
            "not running" if pid is None else f"pid {pid}, {'ready' if answers else 'NOT READY'}"
        )
        system.log(f"{component.name:<18} {state}")
    return healthy


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "kill"])
    parser.add_argument("components", nargs="*", metavar="component")
    args = parser.parse_args(argv)
    try:
        config = ClusterConfig.from_env()
        every = components(config)
        names = [c.name for c in every]
        if unknown := sorted(set(args.components) - set(names)):
            raise StackError(f"unknown component(s) {unknown}; choose from {names}")
        chosen = [c for c in every if not args.components or c.name in args.components]
        everything = len(chosen) == len(every)
        if args.command == "up":
            up(config, chosen, everything)
        elif args.command == "down":
            down(config, chosen, everything)
        elif args.command == "kill":
            hosts = [c for c in chosen if isinstance(c, HostApi)]
            if not hosts or len(hosts) != len(chosen) or not args.components:
                raise StackError("kill takes API hosts only, e.g. `kill api2`")
            for host in hosts:
                host.kill()
        else:
            return 0 if status(chosen) else 1
    except (StackError, subprocess.CalledProcessError) as exc:
        system.log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
