"""Readers for the deployment files: Dockerfile, docker-compose.yml, deploy/compose, deploy/k8s."""

import configparser
import ipaddress
import itertools
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_DIR = ROOT / "deploy" / "compose"
K8S_DIR = ROOT / "deploy" / "k8s"
K8S_API = ("Deployment", "conduit-api")

Doc = dict[str, Any]


# ---- Dockerfile ----


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def dockerfile_args(keyword: str) -> list[str]:
    return [arguments for name, arguments in dockerfile() if name == keyword]


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: what the image that runs actually is."""
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages[-1]


def dockerfile_cmd() -> list[str]:
    (cmd,) = [arguments for name, arguments in final_stage() if name == "CMD"]
    parsed: list[str] = json.loads(cmd)  # exec form: uvicorn is PID 1 and gets SIGTERM
    return parsed


def uvicorn_port() -> int:
    return int(option(dockerfile_cmd(), "--port"))


def image_uid() -> int:
    (user,) = [arguments for name, arguments in final_stage() if name == "USER"]
    return int(user.split(":")[0])  # numeric, so Kubernetes can verify runAsNonRoot


def option(argv: list[str], flag: str) -> str:
    """The value after `flag` in an argv list."""
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def http_check_url(argv: list[str]) -> tuple[int, str]:
    """(port, path) of the http://127.0.0.1:PORT/PATH a health check command fetches."""
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/-]*)", " ".join(argv))
    assert match, f"no local URL in health check {argv}"
    return int(match.group(1)), match.group(2)


# ---- docker compose ----


@cache
def compose() -> Doc:
    loaded: Doc = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services() -> dict[str, Doc]:
    result: dict[str, Doc] = compose()["services"]
    return result


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: Any) -> str:
    """Compose's `${VAR:-default}` with nothing set in the environment: the defaults; a
    required `${VAR:?message}` (which compose refuses to run without) becomes ""."""
    return _INTERPOLATION.sub(
        lambda match: match.group(3) if match.group(2) == "-" else "", str(value)
    )


def interpolations(text: str) -> list[tuple[str, str | None]]:
    """(variable, "-" | "?" | None) of every `${...}` in a compose text."""
    return [(match.group(1), match.group(2)) for match in _INTERPOLATION.finditer(text)]


def service_env(name: str) -> dict[str, str]:
    environment = services()[name].get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: interpolate(value) for key, value in environment.items()}


def healthcheck_argv(service: Doc) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    assert test[0] in {"CMD", "CMD-SHELL"}, test
    return list(test[1:]) if test[0] == "CMD" else shlex.split(test[1])


def pg_setting(command: list[str], name: str) -> int:
    """A `-c name=value` PostgreSQL server option from a container command."""
    values = [
        int(value.split("=", 1)[1])
        for flag, value in itertools.pairwise(command)
        if flag == "-c" and value.startswith(f"{name}=")
    ]
    assert values, f"{name} not set in {command}"
    return values[-1]


def pgbouncer_ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        delimiters=("=",), comment_prefixes=(";", "#"), interpolation=None
    )
    parser.read_string(text)
    return parser


def compose_pgbouncer() -> configparser.ConfigParser:
    return pgbouncer_ini((COMPOSE_DIR / "pgbouncer" / "pgbouncer.ini").read_text())


def per_process_pool(env: dict[str, str]) -> int:
    """Most connections one api or worker process opens: SQLAlchemy pool + overflow."""
    return int(env["DB_POOL_SIZE"]) + int(env["DB_MAX_OVERFLOW"])


def nginx_conf() -> str:
    """nginx.conf without comments."""
    text = (COMPOSE_DIR / "nginx" / "nginx.conf").read_text()
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def stack_nginx_conf() -> str:
    """deploy/stack/nginx.conf (the `make stack` template) without comments."""
    text = (ROOT / "deploy" / "stack" / "nginx.conf").read_text()
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _location_blocks(conf: str) -> list[tuple[re.Match[str], int]]:
    """Each `location ... {` match with the index just past its closing brace; braces inside
    quotes skipped."""
    found = []
    for match in re.finditer(r"location\s+(?:(=|~\*?|\^~)\s+)?(\S+)\s*\{", conf):
        depth, quote, end = 1, "", match.end()
        while depth:
            char = conf[end]
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char in "{}":
                depth += 1 if char == "{" else -1
            end += 1
        found.append((match, end))
    return found


def nginx_locations(conf: str) -> list[tuple[str, str, str]]:
    """(modifier, pattern, body) of every location block."""
    return [
        (match.group(1) or "", match.group(2), conf[match.end() : end - 1])
        for match, end in _location_blocks(conf)
    ]


def nginx_location(conf: str, path: str) -> str | None:
    """The body of the location nginx picks for `path`: exact, then the longest prefix (`^~`
    stops there), then the first matching regex, else that longest prefix."""
    locations = [loc for loc in nginx_locations(conf) if not loc[1].startswith("@")]
    for modifier, pattern, body in locations:
        if modifier == "=" and pattern == path:
            return body
    prefixes = [loc for loc in locations if loc[0] in {"", "^~"} and path.startswith(loc[1])]
    longest = max(prefixes, key=lambda loc: len(loc[1]), default=None)
    if longest is not None and longest[0] == "^~":
        return longest[2]
    for modifier, pattern, body in locations:
        flags = re.IGNORECASE if modifier == "~*" else 0
        if modifier.startswith("~") and re.search(pattern, path, flags):
            return body
    return longest[2] if longest is not None else None


def nginx_upstreams(conf: str) -> dict[str, str]:
    """Upstream name -> body of its block."""
    return dict(re.findall(r"upstream\s+(\S+)\s*\{([^}]*)\}", conf))


def nginx_size(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    suffix = value[-1].lower()
    return int(value[:-1]) * units[suffix] if suffix in units else int(value)


def nginx_seconds(value: str) -> int:
    return int(value.removesuffix("s"))


# ---- Kubernetes ----


def k8s_files() -> list[Path]:
    return sorted(K8S_DIR.rglob("*.yaml")) + sorted(K8S_DIR.rglob("*.yml"))


@cache
def k8s_docs() -> list[Doc]:
    return [
        doc
        for path in k8s_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None and doc["kind"] not in {"Kustomization", "Component"}
    ]


def k8s(kind: str, name: str) -> Doc:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def k8s_pgbouncer() -> configparser.ConfigParser:
    return pgbouncer_ini(k8s("ConfigMap", "pgbouncer-config")["data"]["pgbouncer.ini"])


def server_connections_left(service: str) -> int:
    """What the limits recorded on a database Service (its `conduit/…` annotations) leave for
    PgBouncer: max_connections less the superuser's and the direct connections' reserves."""
    annotations = k8s("Service", service)["metadata"]["annotations"]

    def limit(name: str) -> int:
        return int(annotations[f"conduit/{name}"])

    return (
        limit("max-connections")
        - limit("superuser-reserved-connections")
        - limit("direct-connections-reserve")
    )


def workloads() -> Iterator[Doc]:
    """Everything with a pod template."""
    return (d for d in k8s_docs() if d["kind"] in {"Deployment", "StatefulSet", "Job"})


def container(workload: Doc, name: str) -> Doc:
    (found,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    result: Doc = found
    return result


def container_env(workload: Doc, name: str) -> dict[str, str]:
    """Every variable a container gets: envFrom ConfigMaps and Secrets, then env."""
    spec = container(workload, name)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env |= k8s("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            secret = k8s("Secret", source["secretRef"]["name"])
            env |= secret.get("stringData", {}) | secret.get("data", {})
    env |= {item["name"]: item.get("value", "") for item in spec.get("env", [])}
    return env


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


# ---- NetworkPolicy ----

NAMESPACE = "conduit"  # every manifest's, set by kustomization.yaml


@dataclass(frozen=True)
class Peer:
    """One end of a connection as NetworkPolicy sees it: a pod (of this namespace, from one
    of its workloads, or of another namespace) or an address outside the cluster."""

    namespace: str | None = None  # None: an address outside the cluster
    labels: dict[str, str] = field(default_factory=dict)
    workload: Doc | None = None  # a pod of ours: its container ports have names
    address: str | None = None

    def __str__(self) -> str:
        if self.workload is not None:
            return str(self.workload["metadata"]["name"])
        return self.address or f"{self.namespace}/{self.labels}"


def pod(workload: Doc) -> Peer:
    return Peer(NAMESPACE, pod_labels(workload), workload)


def foreign_pod(namespace: str, **labels: str) -> Peer:
    return Peer(namespace, labels)


def outside(address: str) -> Peer:
    return Peer(address=address)


def network_policies() -> list[Doc]:
    return [doc for doc in k8s_docs() if doc["kind"] == "NetworkPolicy"]


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is modelled: {selector}"
    return matches(selector.get("matchLabels", {}), labels)


def _policy_types(spec: Doc) -> list[str]:
    # The API server's default: Ingress always, Egress when there are egress rules.
    default = ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]
    types: list[str] = spec.get("policyTypes", default)
    return types


def _peer_matches(selector: Doc, peer: Peer) -> bool:
    if "ipBlock" in selector:
        # Pods are never matched by address here: which pod IPs an ipBlock covers is the
        # CNI's business, and these manifests never rely on it.
        if peer.address is None:
            return False
        block = selector["ipBlock"]
        address = ipaddress.ip_address(peer.address)
        networks = [
            ipaddress.ip_network(cidr) for cidr in (block["cidr"], *block.get("except", []))
        ]
        inside, *excepted = networks
        return address in inside and not any(address in network for network in excepted)
    if peer.namespace is None:
        return False
    if "namespaceSelector" in selector:
        namespace = {"kubernetes.io/metadata.name": peer.namespace}
        if not _selects(selector["namespaceSelector"], namespace):
            return False
    elif peer.namespace != NAMESPACE:
        return False
    return _selects(selector.get("podSelector", {}), peer.labels)


def _port_matches(rule_port: Doc, destination: Peer, port: int, protocol: str) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):  # a name: the destination pod's container port of that name
        if destination.workload is None:
            return False
        return any(
            declared.get("name") == wanted and declared["containerPort"] == port
            for spec in destination.workload["spec"]["template"]["spec"]["containers"]
            for declared in spec.get("ports", [])
        )
    last: int = rule_port.get("endPort") or wanted
    return bool(wanted <= port <= last)


def _side_allows(
    own: Peer, other: Peer, destination: Peer, port: int, protocol: str, kind: str
) -> bool:
    """Whether the policies selecting `own` (for `kind`, Ingress or Egress) let the
    connection with `other` through: open when none selects it, else some rule must."""
    if own.namespace != NAMESPACE:
        return True  # another namespace's pod, or an address outside: not ours to judge
    selecting = [
        doc["spec"]
        for doc in network_policies()
        if kind in _policy_types(doc["spec"]) and _selects(doc["spec"]["podSelector"], own.labels)
    ]
    if not selecting:
        return True
    peers_key = "from" if kind == "Ingress" else "to"
    for spec in selecting:
        for rule in spec.get(kind.lower(), []):
            peers = rule.get(peers_key) or []
            ports = rule.get("ports") or []
            if (not peers or any(_peer_matches(p, other) for p in peers)) and (
                not ports or any(_port_matches(p, destination, port, protocol) for p in ports)
            ):
                return True
    return False


def reachable(source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
    """NetworkPolicy's verdict on a new connection from `source` to `destination`:port. A pod
    selected by no policy of a direction is open in that direction; once selected, only what
    some rule of those policies allows passes; both ends must allow it."""
    return _side_allows(
        destination, source, destination, port, protocol, "Ingress"
    ) and _side_allows(source, destination, destination, port, protocol, "Egress")


# ---- nginx directives ----


def nginx_outside_locations(conf: str) -> str:
    """The config with every location block cut out: what the http and server levels set."""
    kept, start = [], 0
    for match, end in _location_blocks(conf):
        kept.append(conf[start : match.start()])
        start = end
    return "".join([*kept, conf[start:]])


def nginx_directive(text: str, name: str) -> list[str]:
    """The arguments of every `name ...;` in text (one string each, in order)."""
    return [m.group(1).strip() for m in re.finditer(rf"(?m)^\s*{name}\s+([^;]*);", text)]


# ---- Redis ----


def redis_argv_settings(argv: list[str]) -> dict[str, str]:
    """`redis-server --name value ...` as {name: value}."""
    assert argv[0] == "redis-server", argv
    settings = {}
    for flag, value in itertools.pairwise(argv[1:]):
        if flag.startswith("--"):
            settings[flag.removeprefix("--")] = value
    return settings


def redis_conf_settings(text: str) -> dict[str, str]:
    """A redis.conf as {name: value} (the last one wins, quotes dropped)."""
    settings = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            settings[words[0]] = " ".join(words[1:])
    return settings


def memory_bytes(value: str) -> int:
    """Redis (`256mb`), Kubernetes (`320Mi`) or compose (`512M`) memory sizes, every unit
    read as binary (close enough to compare a maxmemory with a limit)."""
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", value.strip())
    assert match, value
    units = {
        "": 1,
        "b": 1,
        "k": 1024,
        "kb": 1024,
        "ki": 1024,
        "m": 1024**2,
        "mb": 1024**2,
        "mi": 1024**2,
        "g": 1024**3,
        "gb": 1024**3,
        "gi": 1024**3,
    }
    return int(match.group(1)) * units[match.group(2).lower()]
