"""Profiling an API worker under load with py-spy (not a project dependency: pass its path),
and summarising the collapsed stacks it writes into tables a reader can act on."""

import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.lib import markdown

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# SQLAlchemy's async layer runs the ORM in greenlets, and py-spy shows a greenlet's frames
# as a stack of their own, rooted at the Session method the request awaited: such stacks
# belong to a request although no FastAPI frame is on them.
GREENLET = "(sqlalchemy/orm/session.py)"
FASTAPI = "FastAPI.__call__ ("

# Where the workers' busy time goes. A sample counts for a row when any of the row's
# needles is in its stack (so rows overlap); a row marked `outside` counts the samples
# that have none of them.
STAGES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("outside requests: uvicorn, httptools, event loop", (FASTAPI, GREENLET), True),
    ("inside FastAPI (middleware, routing, endpoint)", (FASTAPI, GREENLET), False),
    ("dependencies (solve_dependencies)", ("solve_dependencies (",), False),
    (
        "session open/commit/close (get_session + Session.commit/close)",
        (
            "get_session (app/dependencies.py)",
            "Session.commit " + GREENLET,
            "Session.close " + GREENLET,
        ),
        False,
    ),
    ("JWT decode (read_user_id)", ("read_user_id (",), False),
    (
        "SQLAlchemy execute, statement to rows (incl. psycopg)",
        (
            "AsyncSession.execute (",
            "AsyncSession.scalar (",
            "Session.execute " + GREENLET,
            "Session.scalar " + GREENLET,
        ),
        False,
    ),
    ("SQLAlchemy compile + cache key (_compile_w_cache)", ("_compile_w_cache (",), False),
    (
        "SQLAlchemy ORM result rows (orm/loading.py instances)",
        ("instances (sqlalchemy/orm/loading.py)",),
        False,
    ),
    ("SQLAlchemy building statements (app/*/queries.py)", ("queries.py)",), False),
    ("psycopg execute: send, wait, fetch (AsyncCursor.execute)", ("AsyncCursor.execute (",), False),
    ("psycopg BEGIN/COMMIT/ROLLBACK (_exec_command)", ("_exec_command (",), False),
    ("SQLAlchemy pool checkout/checkin", ("sqlalchemy/pool/",), False),
    ("pydantic models built (BaseModel.__init__)", ("BaseModel.__init__ (",), False),
    ("timestamps formatted (app/schemas.py _iso_millis)", ("_iso_millis (",), False),
    ("response validation + JSON (serialize_response)", ("serialize_response (",), False),
)


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @property
    def package(self) -> str:
        return self.file.split("/", 1)[0] if "/" in self.file else self.file


def stacks(raw: Path) -> Iterator[tuple[list[Frame], int]]:
    for line in raw.read_text().splitlines():
        path, _, count = line.rpartition(" ")
        if not path or not count.isdigit():
            continue
        frames = []
        for part in path.split(";"):
            match = FRAME.match(part)
            if match:
                frames.append(Frame(match["function"], match["file"]))
            else:
                frames.append(Frame(part, ""))
        yield frames, int(count)


def record(py_spy: str, pid: int, duration_s: int, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling `pid` and its children in the background (100 Hz, without pausing them)."""
    command = [py_spy, "record", "--pid", str(pid), "--subprocesses", "--duration", str(duration_s)]
    command += ["--rate", "100", "--nonblocking", "--format", "raw", "--output", str(output)]
    # The py-spy path comes from the person running the benchmark.
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # noqa: S603


def summarise(
    raw: Path, *, cpu_ms_per_request: float | None = None, within: str = "", top: int = 15
) -> str:
    """Markdown: stages, self time by package and function, inclusive time by function.
    Given the workers' CPU per request, each share is also shown as milliseconds of it.
    `within` keeps only the samples with a frame whose text contains it (and greenlet stacks)."""
    total = 0
    by_stage: Counter[str] = Counter()
    self_package: Counter[str] = Counter()
    self_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks(raw):
        text = ";".join(f"{f.function} ({f.file})" for f in frames)
        if within not in text and GREENLET not in text:
            continue
        total += count
        for stage, needles, outside in STAGES:
            if any(needle in text for needle in needles) != outside:
                by_stage[stage] += count
        leaf = frames[-1]
        self_package[leaf.package] += count
        self_function[f"{leaf.function} ({leaf.file})"] += count
        for name in {f"{f.function} ({f.file})" for f in frames}:
            inclusive[name] += count
    if not total:
        return "_no samples_\n"

    def table(title: str, counts: Counter[str], limit: int | None = top) -> str:
        ms = cpu_ms_per_request
        header = [title, "% of busy samples", *(["≈ CPU ms/request"] if ms else [])]
        rows = [
            [f"`{key}`", f"{n / total:.1%}", *([f"{n / total * ms:.2f}"] if ms else [])]
            for key, n in counts.most_common(limit)
        ]
        return markdown.table(header, rows)

    stages = Counter({stage: by_stage[stage] for stage, _, _ in STAGES})
    return (
        f"{total:,} samples of the API workers while busy (idle samples dropped).\n\n"
        + table("stage (inclusive, rows overlap)", stages, None)
        + "\n"
        + table("package (self)", self_package)
        + "\n"
        + table("function (self)", self_function)
        + "\n"
        + table("function (inclusive)", inclusive, top * 2)
    )
