"""Locust user journeys with think time (run by bench.loadtest, never imported by it: Locust
patches the standard library with gevent).

    locust -f bench/journeys.py --headless ...   with BENCH_DATA=<json> BENCH_SCENARIO=<name>

Scenarios (BENCH_SCENARIO):
  mixed   readers browse the front page, open articles and their comments, tag pages and
          profiles; members (a share, most resuming a session, some logging in) also read
          their feed, favorite, follow, comment and publish
  viral   the same people, but most of them open one article (and its comments), and
          members favorite and comment on it
  burst   everyone arrives at once: half sign up, half log in, then read the front page
BENCH_DATA: JSON with slugs, users, tags, tokens (seeded users' JWTs, bench.loadtest logs
them in once), viral (a slug), run (a unique id for sign-ups). BENCH_THINK: "min:max"
seconds between page views. BENCH_MEMBER_SHARE, BENCH_LOGIN_SHARE: fractions. BENCH_SETTLE:
seconds between the last user's start and the statistics' reset.
BENCH_CHECK_WRITES=1 (bench.cluster): each member is a seeded user of their own (no two
share a token) and reads back each write at once: "own write: <write>" requests, which fail
as "stale" when the answer does not show it (read-your-writes, docs/ARCHITECTURE.md
"Replicas"). BENCH_TIMELINE: a CSV written at exit with every request's start (epoch s),
duration (ms) and outcome, for the moments a fault struck.
"""

import csv
import itertools
import json
import os
import random
import threading
from typing import Any

from locust import between, constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

from bench.lib.wrk import error_kind

DATA: dict[str, Any] = json.loads(open(os.environ["BENCH_DATA"]).read())  # noqa: SIM115
SCENARIO = os.environ.get("BENCH_SCENARIO", "mixed")
THINK_MIN, THINK_MAX = (float(x) for x in os.environ.get("BENCH_THINK", "5:15").split(":"))
MEMBER_SHARE = float(os.environ.get("BENCH_MEMBER_SHARE", "0.2"))
LOGIN_SHARE = float(os.environ.get("BENCH_LOGIN_SHARE", "0.05"))
SETTLE_S = float(os.environ.get("BENCH_SETTLE", "0"))
CHECK_WRITES = os.environ.get("BENCH_CHECK_WRITES") == "1"
TIMELINE = os.environ.get("BENCH_TIMELINE")
PASSWORD = "password"  # noqa: S105 - bench.lib.seeding's password for every user
SLUGS: list[str] = DATA["slugs"]
USERS: list[str] = DATA["users"]
TAGS: list[str] = DATA["tags"]
TOKENS: list[tuple[str, str]] = [tuple(t) for t in DATA["tokens"]]  # (email, token)
VIRAL: str = DATA.get("viral") or SLUGS[0]
_arrivals = itertools.count()
_members = itertools.count()  # with CHECK_WRITES: the next member's own token
WEIGHT_SCALE = 100  # Locust weights are integers


def _measure_after_settling(environment: Environment, **_: Any) -> None:
    """--reset-stats resets the statistics when the last user has started; this resets them
    again SETTLE_S later, so the arrival's transient is not counted as the steady state."""

    def settle_then_reset(**_: Any) -> None:
        reset = threading.Timer(SETTLE_S, environment.stats.reset_all)  # a greenlet (gevent)
        reset.daemon = True
        reset.start()

    if SETTLE_S > 0:
        environment.events.spawning_complete.add_listener(settle_then_reset)  # type: ignore[no-untyped-call]


events.init.add_listener(_measure_after_settling)  # type: ignore[no-untyped-call]

# (start epoch s, duration ms, failed) of every request, with TIMELINE.
_timeline: list[tuple[float, float, int]] = []


def _record_request(
    start_time: float, response_time: float, exception: BaseException | None, **_: Any
) -> None:
    _timeline.append((start_time, response_time, int(exception is not None)))


def _write_timeline(**_: Any) -> None:
    assert TIMELINE is not None  # noqa: S101 - registered only with it
    with open(TIMELINE, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["start", "ms", "failed"])
        writer.writerows((f"{s:.4f}", f"{ms:.1f}", failed) for s, ms, failed in _timeline)


if TIMELINE:
    events.request.add_listener(_record_request)  # type: ignore[no-untyped-call]
    events.quitting.add_listener(_write_timeline)  # type: ignore[no-untyped-call]


def _slug() -> str:
    if SCENARIO == "viral" and random.random() < 0.8:
        return VIRAL
    return random.choice(SLUGS)


class Visitor(FastHttpUser):
    """Someone reading, not logged in."""

    abstract = True
    wait_time = between(THINK_MIN, THINK_MAX)
    network_timeout = 60.0
    connection_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers: dict[str, str] = {}

    def _call(self, method: str, path: str, name: str, **kwargs: Any) -> Any:
        """A request whose failure is named by what the API said (shed, deadline, ...); the
        response when it succeeded, else None (its body is parsed only by who needs it)."""
        with self.client.request(
            method, path, name=name, headers=self.headers, catch_response=True, **kwargs
        ) as response:
            if response.status_code and response.status_code < 400:
                return response
            if not response.status_code:  # no answer at all: the client's own error stands
                return None
            response.failure(error_kind(response.status_code, response.text or ""))
            return None

    def _get(self, path: str, name: str) -> None:
        self._call("GET", path, name)

    @task(4)
    def front_page(self) -> None:
        self._get(f"/api/articles?limit=10&offset={10 * random.randrange(3)}", "front page")
        self._get("/api/tags", "tags")

    @task(4)
    def open_article(self) -> None:
        slug = _slug()
        self._get(f"/api/articles/{slug}", "article")
        self._get(f"/api/articles/{slug}/comments", "comments")

    @task(2)
    def tag_page(self) -> None:
        self._get(f"/api/articles?tag={random.choice(TAGS)}&limit=10", "tag page")

    @task(1)
    def profile(self) -> None:
        user = random.choice(USERS)
        self._get(f"/api/profiles/{user}", "profile")
        self._get(f"/api/articles?author={user}&limit=5", "profile articles")


class Reader(Visitor):
    weight = round(WEIGHT_SCALE * (1 - MEMBER_SHARE))


class Member(Visitor):
    """A seeded user: most resume a session (a token bench.loadtest got once), a share logs
    in; besides reading, they favorite, follow, comment and publish."""

    weight = round(WEIGHT_SCALE * MEMBER_SHARE)

    def on_start(self) -> None:
        if CHECK_WRITES:  # one account per member: only their own writes change what they see
            email, token = TOKENS[next(_members) % len(TOKENS)]
        else:
            email, token = random.choice(TOKENS)
        if random.random() < LOGIN_SHARE:
            body = {"user": {"email": email, "password": PASSWORD}}
            with self.client.post(
                "/api/users/login", json=body, name="login", catch_response=True
            ) as r:
                if r.status_code == 200:
                    token = r.json()["user"]["token"]
        self.headers = {"Authorization": f"Token {token}"}
        self.own_name = DATA.get("names", {}).get(email)  # with CHECK_WRITES: nobody follows self

    @task(2)
    def feed(self) -> None:
        self._get("/api/articles/feed?limit=10", "feed")

    def _read_back(self, write: str, path: str, shows: Any) -> None:
        """With CHECK_WRITES: read `path` at once, through any host; stale unless `shows`
        holds for its body. A failed read counts as such, not as stale."""
        if not CHECK_WRITES:
            return
        name = f"own write: {write}"
        with self.client.get(
            path, name=name, headers=self.headers, catch_response=True
        ) as response:
            if not response.status_code or response.status_code >= 400:
                if response.status_code:
                    response.failure(error_kind(response.status_code, response.text or ""))
                return
            if not shows(response.json()):
                response.failure("stale")

    @task(1)
    def favorite(self) -> None:
        slug = _slug()
        if self._call("POST", f"/api/articles/{slug}/favorite", "favorite") is not None:
            self._read_back(
                "favorite", f"/api/articles/{slug}", lambda b: b["article"]["favorited"]
            )
        if (
            random.random() < 0.3
            and self._call("DELETE", f"/api/articles/{slug}/favorite", "unfavorite") is not None
        ):
            self._read_back(
                "unfavorite", f"/api/articles/{slug}", lambda b: not b["article"]["favorited"]
            )

    @task(1)
    def follow(self) -> None:
        user = random.choice(USERS)
        if user == self.own_name:
            return
        if self._call("POST", f"/api/profiles/{user}/follow", "follow") is not None:
            self._read_back("follow", f"/api/profiles/{user}", lambda b: b["profile"]["following"])

    @task(1)
    def comment(self) -> None:
        body = {"comment": {"body": f"bench comment {random.getrandbits(32):x}"}}
        path = f"/api/articles/{_slug()}/comments"
        made = self._call("POST", path, "comment", json=body)
        if made is not None and CHECK_WRITES:
            made_id = made.json()["comment"]["id"]
            self._read_back(
                "comment", path, lambda b: any(c["id"] == made_id for c in b["comments"])
            )

    @task(1)
    def publish(self) -> None:
        if random.random() >= 0.2:  # publishing is rarer than the other writes
            return
        n = random.getrandbits(32)
        article = {
            "title": f"Bench article {n:x}",
            "description": "written under load",
            "body": "lorem ipsum " * 100,
            "tagList": random.sample(TAGS, 2),
        }
        made = self._call("POST", "/api/articles", "publish", json={"article": article})
        if made is not None and CHECK_WRITES:
            published = made.json()["article"]
            slug = published["slug"]
            self._read_back(
                "publish",
                f"/api/articles?author={published['author']['username']}&limit=5",
                lambda b: any(a["slug"] == slug for a in b["articles"]),
            )


class Arrival(FastHttpUser):
    """The burst: arrives, signs up or logs in once, reads the front page, then idles."""

    abstract = SCENARIO != "burst"
    wait_time = constant(THINK_MAX)
    network_timeout = 60.0
    connection_timeout = 60.0

    def on_start(self) -> None:
        n = next(_arrivals)
        if n % 2 == 0:
            name = f"b{DATA['run']}-{os.getpid()}-{n}"
            user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
            self.client.post("/api/users", json={"user": user}, name="sign up")
        else:
            email = random.choice(TOKENS)[0]
            body = {"user": {"email": email, "password": PASSWORD}}
            self.client.post("/api/users/login", json=body, name="login")

    @task
    def front_page(self) -> None:
        self.client.get("/api/articles?limit=10", name="front page")


if SCENARIO == "burst":
    Reader.abstract = Member.abstract = True
