"""What every benchmark against the running stack does around its own measurements: its
arguments, its data and tokens, and the record that opens results.json."""

import argparse
import asyncio
import os
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.lib import seeding, storm
from bench.lib.database import sample_data
from bench.lib.targets import DEFAULT_STACK_DIR, Stack

LOGGED_IN = 0.2  # share of wrk requests and of Locust users that carry a seeded user's token


def ints(text: str) -> list[int]:
    """`100,1000,5000` as an argument: the steps of a run."""
    return [int(x) for x in text.split(",") if x]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--stack-dir, --out and --render, the same in every stack benchmark."""
    parser.add_argument(
        "--stack-dir", type=Path, default=Path(os.environ.get("STACK_DIR") or DEFAULT_STACK_DIR)
    )
    parser.add_argument("--out", type=Path, help="results folder (default: timestamped)")
    parser.add_argument(
        "--render", type=Path, metavar="DIR", help="only redraw DIR's report from its results.json"
    )


def prepare(stack: Stack, *, size: str | None, logins: int) -> dict[str, Any]:
    """Seed the stack's database with the data set `size` (None: keep what it holds); then
    what the load picks from, and (email, token) of the first `logins` seeded users."""
    direct = stack.env["DIRECT_DATABASE_URL"]
    if size is not None:
        seeding.fill(direct, seeding.PRESETS[size], truncate=True)
    data = sample_data(direct)
    print(f"logging in {logins} seeded users (argon2: a few at a time)", flush=True)
    started = time.monotonic()
    emails = [f"user{n}@example.com" for n in range(1, logins + 1)]
    data["tokens"] = asyncio.run(storm.login_many(stack.api_url, emails))
    print(f"  {logins} logins in {time.monotonic() - started:.1f} s", flush=True)
    return data


def record(
    module: str, argv: Sequence[str] | None, args: argparse.Namespace, started: datetime
) -> dict[str, Any]:
    """How the run was started: the command as given, when, and every argument's value."""
    given = list(sys.argv[1:] if argv is None else argv)
    return {
        "command": shlex.join(["python", "-m", module, *given]),
        "started": started.isoformat(timespec="seconds"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
