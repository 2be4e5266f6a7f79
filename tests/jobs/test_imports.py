"""Bulk imports: upload, worker, counts, per-line errors, limits, exactly once."""

import asyncio
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, cast

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.imports import chunks, loader
from app.main import create_app
from app.state import AppState
from app.workers import jobs
from tests.concurrency.conftest import make_users
from tests.conftest import ROOT, serve_with_state
from tests.jobs.conftest import eventually, worker_env

BAD_LINES = {
    17: b"{not json",
    404: b'{"title": "", "description": "d", "body": "b"}',
    2500: b'{"title": "no body", "description": "d"}',
    7777: b'["an", "array"]',
    9998: b'{"title": "t", "description": "d", "body": "b", "tagList": "x"}',
}


def ndjson(lines: int, bad: dict[int, bytes] | None = None, prefix: str = "Post") -> bytes:
    """`lines` articles, one per line (line numbers from 1), some replaced by `bad` ones."""
    out = []
    for n in range(1, lines + 1):
        if bad and n in bad:
            out.append(bad[n])
            continue
        article = {
            "title": f"{prefix} {n % 7000}",  # repeated titles: slugs must still be unique
            "description": f"d{n}",
            "body": f"body {n}",
            "tagList": ["zeta", f"t{n % 5}", "alpha", "zeta"],
        }
        out.append(orjson.dumps(article if n % 2 else {"article": article}))
    return b"\n".join(out) + b"\n"


async def upload(client: httpx.AsyncClient, headers: dict[str, str], body: bytes) -> int:
    response = await client.post(
        "/imports", content=body, headers=headers | {"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/api/imports/{response.json()['import']['id']}"
    import_id: int = response.json()["import"]["id"]
    return import_id


async def wait_done(
    client: httpx.AsyncClient, headers: dict[str, str], import_id: int, within: float = 60
) -> dict[str, Any]:
    status: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal status
        status = (await client.get(f"/imports/{import_id}", headers=headers)).json()["import"]
        return status["state"] in ("done", "failed")

    await eventually(done, within=within, interval=0.2)
    return status


async def article_counts(engine: AsyncEngine) -> tuple[int, int, int]:
    """(articles, distinct descriptions, distinct slugs): equal counts mean no duplicates."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT description), count(DISTINCT slug) FROM articles"
                )
            )
        ).one()
    return row[0], row[1], row[2]


@pytest.mark.usefixtures("worker")
async def test_import_reports_bad_lines_and_imports_good_ones(jobs_client, engine, job_settings):
    [headers] = await make_users(engine, job_settings, 1)
    import_id = await upload(jobs_client, headers, ndjson(10_000, BAD_LINES) + b"\n\n")

    status = await wait_done(jobs_client, headers, import_id)

    assert status["state"] == "done", status
    assert status["totalLines"] == 10_000
    assert status["processedLines"] == 10_000
    assert status["importedCount"] == 10_000 - len(BAD_LINES)
    assert status["failedCount"] == len(BAD_LINES)
    assert status["progress"] == 1.0
    assert [error["line"] for error in status["errors"]] == sorted(BAD_LINES)
    messages = {error["line"]: error["message"] for error in status["errors"]}
    assert messages[17].startswith("invalid JSON")
    assert "title" in messages[404]
    assert "body" in messages[2500]
    assert "tagList" in messages[9998]
    assert await article_counts(engine) == (9_995, 9_995, 9_995)
    async with engine.connect() as conn:
        tags = await conn.scalar(text("SELECT tag_list FROM articles WHERE description = 'd1'"))
        owners = await conn.scalar(text("SELECT count(DISTINCT author_id) FROM articles"))
        chunks = await conn.scalar(text("SELECT count(*) FROM import_chunks"))
    assert tags == ["alpha", "t1", "zeta"]  # sorted and unique, as articles.create stores them
    assert owners == 1
    assert chunks == 0  # imported chunks are deleted with their batch
    listed = await jobs_client.get(f"/imports/{import_id}/errors?limit=2&offset=3", headers=headers)
    assert listed.json() == {
        "errors": [
            {"line": 7777, "message": messages[7777]},
            {"line": 9998, "message": messages[9998]},
        ],
        "errorsCount": 5,
    }


async def test_import_is_exactly_once_when_a_batch_dies_before_commit(
    jobs_client, ctx, engine, job_settings
):
    [headers] = await make_users(engine, job_settings, 1)
    response = await jobs_client.post(
        "/imports", content=ndjson(1_200), headers=headers | {"Idempotency-Key": "run-1"}
    )
    import_id = response.json()["import"]["id"]
    # A worker that dies mid-batch: the batch's inserts were made, the commit never happened.
    async with ctx["sessions"]() as session:
        await loader.import_next_batch(session, import_id=import_id)
        await session.rollback()
    async with ctx["sessions"]() as session:  # one batch committed, then the worker dies
        await loader.import_next_batch(session, import_id=import_id)
        await session.commit()
    assert (await article_counts(engine))[0] == 100

    result = await jobs.run_import(ctx, import_id=import_id)  # the retried job
    await jobs.run_import(ctx, import_id=import_id)  # and once more, for good measure

    assert result == {"state": "done", "processed": 1_200}
    assert await article_counts(engine) == (1_200, 1_200, 1_200)


async def test_import_survives_kill_9_of_the_worker(jobs_client, engine, job_settings, tmp_path):
    [headers] = await make_users(engine, job_settings, 1)
    env = worker_env(job_settings)
    log = (tmp_path / "worker.log").open("wb")

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "app.workers.main"], env=env, stdout=log, stderr=log
        )

    first = start_worker()
    try:
        body = ndjson(10_000, BAD_LINES)
        response = await jobs_client.post(
            "/imports",
            content=body,
            headers=headers | {"Content-Type": "application/x-ndjson"},
        )
        import_id = response.json()["import"]["id"]
        # Chunks of 100 lines (IMPORT_BATCH_LINES) were cut at upload.
        async with engine.connect() as conn:
            chunks = await conn.scalar(text("SELECT chunk_count FROM imports"))
        assert chunks is not None
        assert chunks >= 50

        async def midway() -> bool:
            async with engine.connect() as conn:
                done = await conn.scalar(text("SELECT processed_lines FROM imports"))
            return bool(done) and 0 < done < 5_000

        await eventually(midway, within=30, interval=0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        async with engine.connect() as conn:
            at_kill = await conn.scalar(text("SELECT processed_lines FROM imports"))
        assert at_kill < 10_000

        second = start_worker()
        try:
            status = await wait_done(jobs_client, headers, import_id, within=60)
        finally:
            second.send_signal(signal.SIGTERM)  # graceful stop
            assert second.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
        log.close()

    assert status["state"] == "done", status
    assert status["importedCount"] == 10_000 - len(BAD_LINES)
    assert status["failedCount"] == len(BAD_LINES)
    assert await article_counts(engine) == (9_995, 9_995, 9_995)


async def test_import_limits_and_ownership(jobs_client, engine, job_settings, redis):
    owner, other = await make_users(engine, job_settings, 2)
    small = ndjson(3)

    assert (await jobs_client.post("/imports", content=small)).status_code == 401
    empty = await jobs_client.post("/imports", content=b"\n \n", headers=owner)
    assert empty.status_code == 422
    assert "no articles" in empty.json()["errors"]["body"][0]

    too_many = ndjson(job_settings.import_max_lines + 1)
    response = await jobs_client.post("/imports", content=too_many, headers=owner)
    assert response.status_code == 413
    assert "at most" in response.json()["errors"]["body"][0]

    # Over MAX_BODY_BYTES (1 MiB) but under IMPORT_MAX_BYTES: the import route takes it.
    big = ndjson(12_000)
    assert len(big) > job_settings.max_body_bytes
    first = await jobs_client.post(
        "/imports", content=big, headers=owner | {"Idempotency-Key": "k1"}
    )
    assert first.status_code == 202, first.text
    again = await jobs_client.post(
        "/imports", content=big, headers=owner | {"Idempotency-Key": "k1"}
    )
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["import"]["id"] == first.json()["import"]["id"]
    # The same key with another body is refused, as for every other keyed write.
    other_body = await jobs_client.post(
        "/imports", content=big + ndjson(1), headers=owner | {"Idempotency-Key": "k1"}
    )
    assert other_body.status_code == 422
    assert "different request" in other_body.json()["errors"]["body"][0]
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM imports")) == 1

    import_id = first.json()["import"]["id"]
    assert (await jobs_client.get(f"/imports/{import_id}", headers=other)).status_code == 404
    assert (await jobs_client.get("/imports/999999", headers=owner)).status_code == 404
    # Queued until a worker takes it; the job waits in Redis (SAQ) meanwhile.
    status = (await jobs_client.get(f"/imports/{import_id}", headers=owner)).json()["import"]
    assert status["state"] == "queued"
    assert status["totalLines"] == 12_000
    assert await redis.exists(f"saq:job:{job_settings.queue_name}:import:{import_id}")


async def test_streamed_body_over_the_import_limit_is_413(engine, job_settings, committing_state):
    [headers] = await make_users(engine, job_settings, 1)
    small = job_settings.model_copy(update={"import_max_bytes": 10_000})
    app = create_app(small)

    async def chunks():  # no Content-Length: the limit is enforced as the body streams
        for _ in range(50):
            yield ndjson(5)

    state = replace(committing_state, settings=small)
    transport = httpx.ASGITransport(app=serve_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api") as client:
        response = await client.post("/imports", content=chunks(), headers=headers)
        declared = await client.post(
            "/imports", content=b"x" * 20_000, headers=headers | {"Content-Length": "20000"}
        )
    assert response.status_code == 413
    assert declared.status_code == 413
    async with engine.connect() as conn:  # the failed upload left nothing behind
        assert await conn.scalar(text("SELECT count(*) FROM imports")) == 0
        assert await conn.scalar(text("SELECT count(*) FROM import_chunks")) == 0


@asynccontextmanager
async def client_with(
    committing_state: AppState, settings: Settings, **changes: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The API over the real pool with these settings changed (the queue left out)."""
    changed = settings.model_copy(update=changes)
    state = replace(committing_state, settings=changed)
    transport = httpx.ASGITransport(app=serve_with_state(create_app(changed), state))
    async with httpx.AsyncClient(transport=transport, base_url=ROOT + "/api", timeout=30) as client:
        yield client


async def trickle(pieces: list[bytes], gap_s: float) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(gap_s)
        yield piece


async def import_rows(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        imports = await conn.scalar(text("SELECT count(*) FROM imports"))
        chunks = await conn.scalar(text("SELECT count(*) FROM import_chunks"))
    return imports, chunks


async def test_blank_lines_count_against_the_line_limit(engine, job_settings, committing_state):
    [headers] = await make_users(engine, job_settings, 1)
    async with client_with(committing_state, job_settings, import_max_lines=50) as client:
        padded = await client.post(
            "/imports", content=ndjson(10) + b"\n" * 30 + b" \t \r\n" * 10, headers=headers
        )
        assert padded.status_code == 202, padded.text
        assert padded.json()["import"]["totalLines"] == 10  # the articles, not the padding
        blank = await client.post("/imports", content=ndjson(10) + b"\n" * 41, headers=headers)
    assert blank.status_code == 413
    assert "blank lines included" in blank.json()["errors"]["body"][0]
    assert await import_rows(engine) == (1, 1)


async def test_blank_lines_keep_the_line_numbers(engine, job_settings, committing_state):
    [headers] = await make_users(engine, job_settings, 1)
    body = b"\n\n" + ndjson(2) + b"   \n\n" + b"{not json\n" + b"\n" * 5 + ndjson(1) + b"\n"
    async with client_with(committing_state, job_settings) as client:
        import_id = await upload(client, headers, body)
    async with engine.connect() as conn:
        first_line, data = (
            await conn.execute(text("SELECT first_line, data FROM import_chunks"))
        ).one()
    good, errors, counted = loader.parse(first_line, data)
    assert (len(good), counted) == (3, 4)
    assert errors == [(7, errors[0][1])]  # lines 1-2 and 5-6 blank, 8-12 blank, 13 good
    assert import_id


@pytest.mark.parametrize(("lead", "limit_mib"), [(b"", 1), (ndjson(1), 3)])
async def test_blank_lines_cost_no_more_than_their_bytes(lead, limit_mib):
    """Eight MiB of blank lines once peaked at 58 MiB (a bytes object and a list slot per
    line, about 7 bytes per byte: 7 MiB for the one MiB here). Leading blank lines are
    dropped; inside a chunk each keeps one byte."""

    class Session:
        async def execute(self, *_: Any) -> None:
            return None

    async def body() -> AsyncIterator[bytes]:
        yield lead
        piece = b"\n" * 65_536
        for _ in range(16):  # 1 MiB: enough to tell, and quick under tracemalloc
            yield piece

    writer = chunks.ChunkWriter(cast(AsyncSession, Session()), import_id=1, batch_lines=1000)
    tracemalloc.start()
    try:
        async for number, line in chunks.numbered_lines(body()):
            await writer.add(number, line)
        await writer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.lines == 2**20 + lead.count(b"\n")
    assert writer.articles == lead.count(b"\n")
    assert peak < limit_mib * 2**20


async def test_a_trickling_upload_outlives_the_request_deadline(
    engine, job_settings, committing_state
):
    """Paced, not timed: slower than REQUEST_DEADLINE_S in all, each piece within the idle
    timeout of the one before."""
    [headers] = await make_users(engine, job_settings, 1)
    body = ndjson(30)
    pieces = [body[i : i + len(body) // 6 + 1] for i in range(0, len(body), len(body) // 6 + 1)]
    async with client_with(
        committing_state, job_settings, request_deadline_s=0.3, import_chunk_idle_s=1.0
    ) as client:
        started = time.monotonic()
        response = await client.post("/imports", content=trickle(pieces, 0.2), headers=headers)
        took = time.monotonic() - started
        assert (await client.get("/tags")).status_code == 200  # other routes keep theirs
    assert response.status_code == 202, response.text
    assert took > 1.0
    assert response.json()["import"]["totalLines"] == 30


async def test_a_stalled_upload_is_408_and_leaves_nothing(engine, job_settings, committing_state):
    [headers] = await make_users(engine, job_settings, 1)
    body = ndjson(300)
    async with client_with(
        committing_state,
        job_settings,
        request_deadline_s=5.0,
        import_chunk_idle_s=0.3,
        import_batch_lines=100,  # chunks were already written when it stalls
    ) as client:

        async def stalls() -> AsyncIterator[bytes]:
            yield body[: len(body) * 2 // 3]
            await asyncio.sleep(1.5)
            yield body[len(body) * 2 // 3 :]

        started = time.monotonic()
        response = await client.post("/imports", content=stalls(), headers=headers)
    assert response.status_code == 408
    assert "stalled" in response.json()["errors"]["body"][0]
    assert time.monotonic() - started < 1.4
    assert await import_rows(engine) == (0, 0)  # rolled back, chunks included


async def test_concurrent_uploads_are_bounded(engine, job_settings, committing_state):
    """One upload per user at a time (429), IMPORT_MAX_CONCURRENT per process (503); both
    with Retry-After, in the RealWorld error shape."""
    alice, bob, carol = await make_users(engine, job_settings, 3)
    release = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield ndjson(2)
        await release.wait()
        yield ndjson(1, prefix="Late")

    async with client_with(committing_state, job_settings, import_max_concurrent=2) as client:
        first = asyncio.create_task(client.post("/imports", content=held(), headers=alice))
        await eventually(lambda: _advisory_locks(engine, at_least=1), within=10, interval=0.02)

        same_user = await client.post("/imports", content=ndjson(1), headers=alice)
        assert same_user.status_code == 429
        assert same_user.headers["Retry-After"] == "5"
        assert same_user.json()["errors"]["body"][0].startswith("an import of yours")

        second = asyncio.create_task(client.post("/imports", content=held(), headers=bob))
        await eventually(lambda: _advisory_locks(engine, at_least=2), within=10, interval=0.02)
        full = await client.post("/imports", content=ndjson(1), headers=carol)
        assert full.status_code == 503
        assert full.headers["Retry-After"] == "5"
        assert full.json() == {"errors": {"body": ["too many uploads in progress, retry shortly"]}}

        release.set()
        assert (await first).status_code == 202
        assert (await second).status_code == 202
        after = await client.post("/imports", content=ndjson(1), headers=carol)
        assert after.status_code == 202  # the slots are free again


async def _advisory_locks(engine: AsyncEngine, *, at_least: int) -> bool:
    async with engine.connect() as conn:
        locks = await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))
    return int(locks or 0) >= at_least
