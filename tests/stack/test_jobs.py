"""The job worker in the stack: imports through nginx (bodies over MAX_BODY_BYTES) and
PgBouncer, and a worker killed with SIGKILL is started again by its supervisor."""

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import orjson

from tests.stack.conftest import STATE


def _ndjson(lines: int, tag: str) -> bytes:
    return b"\n".join(
        orjson.dumps({"title": f"{tag} {n}", "description": tag, "body": "b" * 500})
        for n in range(lines)
    )


def _worker_child(supervisor: int) -> int | None:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return int(children[0]) if children else None


async def _import(http: httpx.AsyncClient, headers: dict[str, str], tag: str) -> dict[str, object]:
    body = _ndjson(3_000, tag)
    assert len(body) > 1_048_576  # over MAX_BODY_BYTES: nginx's import route takes it
    response = await http.post("/api/imports", content=body, headers=headers)
    assert response.status_code == 202, response.text
    url = f"/api/imports/{response.json()['import']['id']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status: dict[str, object] = (await http.get(url, headers=headers)).json()["import"]
        if status["state"] in ("done", "failed"):
            return status
        await asyncio.sleep(0.3)
    raise AssertionError(f"import not done in 60s: {status}")


async def test_imports_run_and_a_killed_worker_comes_back(http: httpx.AsyncClient) -> None:
    name = f"importer{uuid.uuid4().hex[:8]}"  # the test stack's data outlives a run
    user = {"username": name, "email": f"{name}@x.io", "password": "password123"}
    registered = await http.post("/api/users", json={"user": user})
    assert registered.status_code == 201, registered.text
    headers = {"Authorization": f"Token {registered.json()['user']['token']}"}

    first = await _import(http, headers, "first")
    assert (first["state"], first["importedCount"]) == ("done", 3_000)

    supervisor = int((STATE / "worker" / "worker.pid").read_text())
    victim = _worker_child(supervisor)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while (child := _worker_child(supervisor)) in (None, victim):
        assert time.monotonic() < deadline, "the worker was not started again"
        await asyncio.sleep(0.2)

    second = await _import(http, headers, "second")
    assert (second["state"], second["importedCount"]) == ("done", 3_000)
    assert child != victim
