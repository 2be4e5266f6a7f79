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
"""

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
PASSWORD = "password"  # noqa: S105 - bench.lib.seeding's password for every user
SLUGS: list[str] = DATA["slugs"]
USERS: list[str] = DATA["users"]
TAGS: list[str] = DATA["tags"]
TOKENS: list[tuple[str, str]] = [tuple(t) for t in DATA["tokens"]]  # (email, token)
VIRAL: str = DATA.get("viral") or SLUGS[0]
_arrivals = itertools.count()
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

    def _call(self, method: str, path: str, name: str, **kwargs: Any) -> None:
        """A request whose failure is named by what the API said (shed, deadline, ...)."""
        with self.client.request(
            method, path, name=name, headers=self.headers, catch_response=True, **kwargs
        ) as response:
            if response.status_code and response.status_code < 400:
                return
            if not response.status_code:  # no answer at all: the client's own error stands
                return
            response.failure(error_kind(response.status_code, response.text or ""))

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
        email, token = random.choice(TOKENS)
        if random.random() < LOGIN_SHARE:
            body = {"user": {"email": email, "password": PASSWORD}}
            with self.client.post(
                "/api/users/login", json=body, name="login", catch_response=True
            ) as r:
                if r.status_code == 200:
                    token = r.json()["user"]["token"]
        self.headers = {"Authorization": f"Token {token}"}

    @task(2)
    def feed(self) -> None:
        self._get("/api/articles/feed?limit=10", "feed")

    @task(1)
    def favorite(self) -> None:
        slug = _slug()
        self._call("POST", f"/api/articles/{slug}/favorite", "favorite")
        if random.random() < 0.3:
            self._call("DELETE", f"/api/articles/{slug}/favorite", "unfavorite")

    @task(1)
    def follow(self) -> None:
        user = random.choice(USERS)
        self._call("POST", f"/api/profiles/{user}/follow", "follow")

    @task(1)
    def comment(self) -> None:
        body = {"comment": {"body": f"bench comment {random.getrandbits(32):x}"}}
        path = f"/api/articles/{_slug()}/comments"
        self._call("POST", path, "comment", json=body)

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
        self._call("POST", "/api/articles", "publish", json={"article": article})


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
