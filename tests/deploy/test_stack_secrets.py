"""`make stack` signs tokens with a secret of its own: generated once into the state dir
(mode 0600) and kept, or JWT_SECRET when given, never a published one. Static: nothing starts."""

import json
import secrets
import stat
from pathlib import Path

import pytest

from app import jwt_secret
from scripts.stack.config import StackConfig, StackError

PUBLISHED = "compose-dev-only-secret-change-me-0123456789"


def _config(state: Path, **env: str) -> StackConfig:
    return StackConfig.from_env({"STACK_DIR": str(state), **env})


def test_the_stack_generates_its_secret_once_and_keeps_it(tmp_path):
    secret = _config(tmp_path).api_env()["JWT_SECRET"]
    assert jwt_secret.problem(secret) is None
    kept = tmp_path / "secrets.json"
    assert json.loads(kept.read_text())["jwt"] == secret
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert _config(tmp_path).api_env()["JWT_SECRET"] == secret  # the next `make stack`
    assert _config(tmp_path / "other").api_env()["JWT_SECRET"] != secret


def test_a_given_secret_is_the_one_the_api_and_worker_get(tmp_path):
    given = secrets.token_urlsafe(48)
    config = _config(tmp_path, JWT_SECRET=given)
    assert config.api_env()["JWT_SECRET"] == given


@pytest.mark.parametrize("secret", [PUBLISHED, "CHANGE-ME-to-at-least-32-random-bytes", "short"])
def test_the_stack_refuses_a_published_or_weak_secret_before_starting(tmp_path, secret):
    with pytest.raises(StackError, match="JWT_SECRET") as refusal:
        _config(tmp_path, JWT_SECRET=secret)
    assert secret not in str(refusal.value)
    assert not (tmp_path / "secrets.json").exists()
