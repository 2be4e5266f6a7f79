"""No published secret ever signs a token: the API refuses to start without a secret of its
own (or with one this repository published), except in explicit development mode, and
`make run` generates one once and keeps it under DATA_DIR."""

import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app import jwt_secret
from app.config import Settings
from app.dev.run import provide_jwt_secret
from app.main import create_app
from tests.database import fresh_database
from tests.image_process import (
    ROOT,
    environment,
    free_port,
    image_command,
    refused,
    serving,
)
from tests.redis_server import RedisServer

# Every value the repository has shipped as a JWT secret (defaults, compose, k8s).
PUBLISHED = (
    "change-me-in-production-please-32b",
    "compose-dev-only-secret-change-me-0123456789",
    "CHANGE-ME-to-at-least-32-random-bytes",
)
PLACEHOLDERS = ("x" * 31, "short", "CHANGEME" + "x" * 40, "my-placeholder-" + "y" * 30)
# `JWT_SECRET: value`, `JWT_SECRET=value`, `${JWT_SECRET:-value}`, `jwt_secret = "value"`.
_ASSIGNED = re.compile(
    r"""\$\{JWT_SECRET:-(?P<default>[^}]*)\}"""
    r"""|(?i:jwt_secret)\w*\s*(?::\s*str\s*)?[:=]\s*(?P<quote>["'])(?P<quoted>[^"'\n]+)(?P=quote)"""
    r"""|\bJWT_SECRET\s*[:=]\s*(?P<bare>[^\s"'$#{},)?]+)"""
)


@pytest.mark.parametrize("mode", ["production", "development"])
@pytest.mark.parametrize("secret", PUBLISHED + PLACEHOLDERS)
def test_settings_refuse_published_placeholder_and_short_secrets_in_every_mode(secret, mode):
    with pytest.raises(ValidationError, match="JWT_SECRET") as refusal:
        Settings(app_env=mode, jwt_secret=secret)
    assert secret not in str(refusal.value)  # a refused secret never reaches a log


def test_a_real_secret_is_accepted_and_an_absent_one_stays_absent():
    real = secrets.token_urlsafe(48)
    assert Settings(jwt_secret=real).jwt_secret == real
    assert Settings(jwt_secret="").jwt_secret == ""  # migrations and the worker need none
    with pytest.raises(jwt_secret.MissingSecret, match="JWT_SECRET is not set"):
        create_app(Settings(jwt_secret=""))


def test_every_secret_the_repository_ever_held_is_refused():
    """A value assigned to JWT_SECRET in any tracked file, or in any commit, is refused."""
    history = subprocess.run(
        ["git", "log", "-p", "--all", "--no-color", "-G", "[Jj][Ww][Tt]_[Ss][Ee][Cc][Rr][Ee][Tt]"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    tracked = subprocess.run(
        ["git", "ls-files", "-z"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\0")
    texts = [history]
    for name in filter(None, tracked):
        path = ROOT / name
        if path.is_file() and path.suffix not in {".png", ".lock"}:
            texts.append(path.read_text(errors="replace"))
    found = {
        value.strip()
        for text in texts
        for match in _ASSIGNED.finditer(text)
        if (value := match["default"] or match["quoted"] or match["bare"] or "").strip()
    }
    assert set(PUBLISHED) <= found  # the scan sees what it must see
    accepted = {value for value in found if jwt_secret.problem(value) is None}
    assert accepted == set()


def test_dev_secret_is_generated_once_with_mode_0600_and_reused(tmp_path):
    path = tmp_path / "data" / "jwt_secret"
    first = jwt_secret.load_or_create(path)
    assert jwt_secret.problem(first) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert jwt_secret.load_or_create(path) == first
    assert list(path.parent.iterdir()) == [path]  # no drafts left behind
    path.write_text("CHANGE-ME-to-at-least-32-random-bytes\n")  # an edited file is refused too
    with pytest.raises(ValueError, match="published"):
        jwt_secret.load_or_create(path)


def test_make_run_provides_its_secret_unless_one_is_given(tmp_path):
    environ: dict[str, str] = {}
    provide_jwt_secret(environ, tmp_path)
    kept = (tmp_path / "jwt_secret").read_text().strip()
    assert environ["JWT_SECRET"] == kept
    again: dict[str, str] = {}
    provide_jwt_secret(again, tmp_path)
    assert again == environ
    given = {"JWT_SECRET": secrets.token_urlsafe(48)}
    provide_jwt_secret(given, tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_development_mode_generates_the_secret_under_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert Settings().jwt_secret == ""  # production, the default: nothing generated
    assert not (tmp_path / "jwt_secret").exists()
    secret = Settings(app_env="development").jwt_secret
    assert secret == (tmp_path / "jwt_secret").read_text().strip()
    assert Settings(app_env="development").jwt_secret == secret


# ---- through real processes: the image's command, the worker, `make run` ----


def test_the_image_refuses_to_start_without_a_secret(database_url):
    output = refused(image_command(free_port()), environment(DATABASE_URL=database_url))
    assert "JWT_SECRET is not set" in output
    assert "APP_ENV=development" in output  # and says how to get going


@pytest.mark.parametrize("secret", PUBLISHED)
def test_the_image_refuses_a_published_secret(database_url, secret):
    env = environment(DATABASE_URL=database_url, JWT_SECRET=secret)
    output = refused(image_command(free_port()), env)
    assert "JWT_SECRET is a value published in the Conduit repository" in output
    assert secret not in output


def test_the_worker_refuses_a_published_secret(database_url):
    env = environment(DATABASE_URL=database_url, JWT_SECRET=PUBLISHED[0])
    output = refused([sys.executable, "-m", "app.workers.main"], env)
    assert "JWT_SECRET is a value published" in output


def test_the_image_serves_in_explicit_development_mode(database_url, tmp_path):
    port = free_port()
    env = environment(DATABASE_URL=database_url, APP_ENV="development", DATA_DIR=str(tmp_path))
    with serving(image_command(port), env, f"http://127.0.0.1:{port}", tmp_path / "api.log"):
        pass
    assert stat.S_IMODE((tmp_path / "jwt_secret").stat().st_mode) == 0o600


def test_make_run_generates_a_secret_once_and_tokens_outlive_a_restart(tmp_path: Path) -> None:
    database_url = fresh_database("conduit_test_make_run")
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = environment(
        DATABASE_URL=database_url,
        REDIS_URL=redis.url,
        DATA_DIR=str(tmp_path / "data"),
        PORT=str(port),
    )
    command = [sys.executable, "-m", "app.dev.run"]
    user = {"user": {"username": "keeper", "email": "keeper@x.io", "password": "pass-word-1"}}
    try:
        with serving(command, env, url, tmp_path / "run-1.log"):
            signed_up = httpx.post(url + "/api/users", json=user, timeout=30)
            assert signed_up.status_code == 201, signed_up.text
            token = signed_up.json()["user"]["token"]
        kept = tmp_path / "data" / "jwt_secret"
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        secret = kept.read_text()
        with serving(command, env, url, tmp_path / "run-2.log"):
            me = httpx.get(url + "/api/user", headers={"Authorization": f"Token {token}"})
        assert me.status_code == 200, me.text
        assert kept.read_text() == secret
    finally:
        redis.stop()
