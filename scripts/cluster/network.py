"""The hosts' network: one bridge on this machine with the data tier's address (x.y.z.1), one
network namespace per API host with a veth pair into the bridge and an address of its own
(x.y.z.10+n). The namespaces have no route beyond the /24: an API host reaches the data tier
and nginx reaches the hosts, nothing else."""

# ruff: noqa: S603, S607 - runs ip(8)

import shutil
import subprocess
from dataclasses import dataclass

from scripts.stack.config import StackError
from scripts.stack.system import is_root, log


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise StackError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Network:
    prefix: str
    subnet: str
    hosts: int

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br0"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def namespace(self, host: int) -> str:
        return f"{self.prefix}-api{host}"

    def address(self, host: int) -> str:
        return f"{self.subnet}.{10 + host}"

    def _exists(self, link: str) -> bool:
        return ip("link", "show", link, check=False).returncode == 0

    def _namespaces(self) -> set[str]:
        return {line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line}

    def up(self) -> None:
        """Idempotent: what exists is kept."""
        if not is_root():
            raise StackError("make cluster creates network namespaces: run it as root")
        if shutil.which("ip") is None:  # iproute2: in most images, not in every one
            subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", "iproute2"], check=True
            )
        if not self._exists(self.bridge):
            log(f"bridge {self.bridge} {self.gateway}/24")
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        namespaces = self._namespaces()
        for host in range(1, self.hosts + 1):
            namespace, outside = self.namespace(host), f"{self.prefix}h{host}"
            if namespace in namespaces and self._exists(outside):
                continue
            log(f"host {host}: namespace {namespace}, {self.address(host)}/24")
            ip("netns", "add", namespace, check=False)
            ip("link", "del", outside, check=False)
            ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("link", "set", outside, "master", self.bridge, "up")
            inside = ("-n", namespace)
            ip(*inside, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            ip(*inside, "link", "set", "eth0", "up")
            ip(*inside, "link", "set", "lo", "up")

    def down(self) -> None:
        for host in range(1, self.hosts + 1):
            ip("link", "del", f"{self.prefix}h{host}", check=False)
            ip("netns", "del", self.namespace(host), check=False)
        ip("link", "del", self.bridge, check=False)
        log(f"network {self.bridge} and its {self.hosts} namespaces removed")

    def pids(self, host: int) -> list[int]:
        """Every process in the host's namespace (what `kill` ends: the host fails)."""
        result = ip("netns", "pids", self.namespace(host), check=False)
        return [int(pid) for pid in result.stdout.split()]

    def in_namespace(self, host: int, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host), *command]
