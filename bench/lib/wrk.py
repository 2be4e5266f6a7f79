"""Running wrk: its Lua scripts, one timed run, and the numbers it reports."""

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Appended to every script: wrk prints its summary as one JSON line we can parse,
# next to its usual text (kept in the report as is).
DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,'
    .. '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# Each wrk thread starts at its own place in the list, then walks it round.
ROTATE_LUA = """
local threads = 0
setup = function(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end
local counter = 0
init = function(args)
  counter = offset or 0
end
request = function()
  counter = counter % #paths + 1
  return wrk.format("GET", paths[counter])
end
"""


# Mixed reads (bench.loadtest): each request draws its kind from MIX, a share of them carry
# a seeded user's token, and with THINK_MS set each connection pauses between requests
# (wrk's delay(): think time at thousands of connections for the price of a timer). Non-2xx
# answers are counted by status in each thread and summed in done().
MIXED_LUA = """
local threads = {}
local next_id = 1
setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
init = function(args)
  math.randomseed(SEED + (id or 0) * 7919)
  statuses = {}
  backoffs = 0
end
local function pick(list)
  return list[math.random(#list)]
end
request = function()
  local roll = math.random()
  local path
  if roll < MIX.list then
    path = "/api/articles?limit=20&offset=" .. (20 * (math.random(5) - 1))
  elseif roll < MIX.list + MIX.tag then
    path = "/api/articles?limit=20&tag=" .. pick(tags)
  elseif roll < MIX.list + MIX.tag + MIX.article then
    path = "/api/articles/" .. pick(slugs)
  elseif roll < MIX.list + MIX.tag + MIX.article + MIX.comments then
    path = "/api/articles/" .. pick(slugs) .. "/comments"
  else
    path = "/api/profiles/" .. pick(users)
  end
  local headers = {}
  if #tokens > 0 and math.random() < LOGGED_IN then
    headers["Authorization"] = "Token " .. pick(tokens)
  end
  return wrk.format("GET", path, headers)
end
response = function(status, headers, body)
  if status > 299 then
    local key = tostring(status)
    for text, kind in pairs(KINDS) do
      if body and string.find(body, text, 1, true) then
        key = key .. " " .. kind
        break
      end
    end
    statuses[key] = (statuses[key] or 0) + 1
    if RETRY_AFTER and status == 503 then
      backoffs = backoffs + 1
    end
  end
end
if THINK_MS[2] > 0 or RETRY_AFTER then
  -- wrk asks delay() once per response, though not always right after that response's
  -- response(): each 503 makes one connection wait its Retry-After (1 s, as the stack says).
  delay = function()
    local wait = 0
    if THINK_MS[2] > 0 then
      wait = math.random(THINK_MS[1], THINK_MS[2])
    end
    if backoffs > 0 then
      backoffs = backoffs - 1
      wait = wait + 1000
    end
    return wait
  end
end
"""

STATUSES_LUA = """
local function status_json()
  local total = {}
  for _, thread in ipairs(threads) do
    local counted = thread:get("statuses") or {}
    for status, n in pairs(counted) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end
"""


# What the API's error bodies say, to tell its refusals apart (app/middleware/request_edge.py, app/main.py).
KINDS = {
    "server busy": "shed",  # MAX_IN_FLIGHT reached: refused before any work
    "took longer than": "deadline",  # REQUEST_DEADLINE_S passed
    "database busy or unavailable": "database",  # pool timeout, PostgreSQL refusing, ...
}


def error_kind(status: int, body: str) -> str:
    """`HTTP 503 shed`, `HTTP 504 deadline`, ... or just `HTTP 500`."""
    for text, kind in KINDS.items():
        if text in body:
            return f"HTTP {status} {kind}"
    return f"HTTP {status}"


def _lua_strings(values: Sequence[str]) -> str:
    return "{" + ",".join(json.dumps(v) for v in values) + "}"  # JSON strings are Lua strings


def mixed_script(
    *,
    slugs: Sequence[str],
    users: Sequence[str],
    tags: Sequence[str],
    tokens: Sequence[str],
    mix: Mapping[str, float],
    logged_in: float,
    think_ms: tuple[int, int] = (0, 0),
    retry_after: bool = False,
    seed: int = 1,
) -> str:
    """Mixed reads: article list pages, tag pages, single articles, comments, profiles.
    `retry_after`: a connection answered 503 waits the second the stack asks for."""
    shares = ", ".join(f"{kind} = {share:g}" for kind, share in mix.items())
    head = [
        f"slugs = {_lua_strings(slugs)}",
        f"users = {_lua_strings(users)}",
        f"tags = {_lua_strings(tags)}",
        f"tokens = {_lua_strings(tokens)}",
        f"MIX = {{{shares}}}",
        f"LOGGED_IN = {logged_in:g}",
        f"THINK_MS = {{{think_ms[0]}, {think_ms[1]}}}",
        f"RETRY_AFTER = {'true' if retry_after else 'false'}",
        f"SEED = {seed}",
        "KINDS = {"
        + ", ".join(f"[{json.dumps(t)}] = {json.dumps(k)}" for t, k in KINDS.items())
        + "}",
    ]
    done = DONE_LUA.replace('"timeout":%d}', '"timeout":%d,"statuses":%s}').replace(
        "e.status, e.timeout))", "e.status, e.timeout, status_json()))"
    )
    return "\n".join(head) + MIXED_LUA + STATUSES_LUA + done


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int  # wrk's "Non-2xx or 3xx responses"
    socket_errors: int  # connect + read + write + timeout
    output: str
    # Errors by kind: socket errors by wrk's names, non-2xx by status (mixed script only).
    errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is missing: install the Debian package `wrk` (apt-get install wrk)")
    print("installing wrk (apt-get install wrk)", flush=True)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    # apt-get from PATH, as `make stack` uses it; an outdated package list is refreshed once.
    if subprocess.run(install, env=env, timeout=300, check=False).returncode != 0:  # noqa: S603
        update = ["apt-get", "update", "-qq"]
        subprocess.run(update, env=env, timeout=300, check=True)  # noqa: S603
        subprocess.run(install, env=env, timeout=300, check=True)  # noqa: S603
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get installed wrk, yet it is not on PATH")
    return found


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its version and usage, and exits 1.
    version = [wrk, "-v"]
    run = subprocess.run(version, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    return (run.stdout + run.stderr).splitlines()[0].strip()


def plain_script() -> str:
    return DONE_LUA


def auth_script(token: str) -> str:
    return _authorization(token) + DONE_LUA


def _authorization(token: str) -> str:
    return f'wrk.headers["Authorization"] = "Token {token}"\n'


def tokens_script(tokens: Sequence[str]) -> str:
    """The URL's path, each request with one of `tokens`, drawn at random."""
    listed = _lua_strings(tokens)
    return (
        f"tokens = {listed}\n"
        "request = function()\n"
        '  return wrk.format(nil, nil, {["Authorization"] = "Token " .. tokens[math.random(#tokens)]})\n'
        "end\n" + DONE_LUA
    )


def rotate_script(paths: Sequence[str], token: str | None = None) -> str:
    listed = ",\n".join(json.dumps(path) for path in paths)  # JSON strings are Lua strings here
    script = f"paths = {{\n{listed}\n}}\n" + ROTATE_LUA + DONE_LUA
    return script if token is None else _authorization(token) + script


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    *,
    connections: int,
    threads: int,
    duration_s: int,
    timeout_s: float = 2.0,
) -> WrkResult:
    command = [
        wrk,
        f"--connections={connections}",
        f"--threads={threads}",
        f"--duration={duration_s}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        f"--script={script}",
        url,
    ]
    run = subprocess.run(  # noqa: S603 - wrk found on PATH, arguments built here
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr.strip()}")
    return parse(run.stdout)


def parse(output: str) -> WrkResult:
    line = next(x for x in output.splitlines() if x.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    kinds = ("connect", "read", "write", "timeout")
    errors = sum(data[kind] for kind in kinds)
    by_kind = {f"socket {kind}": data[kind] for kind in kinds if data[kind]}
    by_kind |= {f"HTTP {status}": n for status, n in sorted(data.get("statuses", {}).items())}
    text = "\n".join(x for x in output.splitlines() if not x.startswith("BENCH_JSON "))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        max_ms=data["max_us"] / 1e3,
        non_2xx=data["status"],
        socket_errors=errors,
        output=text.strip(),
        errors=by_kind,
    )
