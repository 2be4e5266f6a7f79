"""Bulk imports: upload, worker, counts, per-line errors, limits, exactly once."""

import os
import signal
import subprocess
import sys
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.imports import loader
from app.main import create_app
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
