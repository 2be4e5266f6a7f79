"""The baselines are the stack's own launcher with other settings (STACK_VARIANT,
STACK_API_DATABASE): a variant keeps its state apart and shares the data tier and secrets."""

from pathlib import Path

import pytest

from bench.lib.targets import ARCHITECTURES, Stack
from scripts.stack.__main__ import components
from scripts.stack.config import StackConfig, StackError


def _config(tmp_path: Path, **env: str) -> StackConfig:
    return StackConfig.from_env({"STACK_DIR": str(tmp_path)} | env)


def test_variant_keeps_web_state_apart_and_shares_the_data_tier(tmp_path: Path) -> None:
    stack = _config(tmp_path)
    variant = _config(tmp_path, STACK_VARIANT="direct", STACK_API_DATABASE="direct")
    assert variant.dir("api") == tmp_path / "variants" / "direct" / "api"
    assert variant.dir("nginx") == tmp_path / "variants" / "direct" / "nginx"
    assert variant.dir("postgres") == stack.dir("postgres")
    # Its own web tier: the API, HAProxy's line (the default admission) and nginx.
    assert [c.name for c in components(variant)] == ["api", "haproxy", "nginx"]
    assert variant.secrets == stack.secrets  # one secrets.json: same roles, same JWT key


def test_direct_variant_connects_straight_to_postgres_with_the_app_role(tmp_path: Path) -> None:
    stack = _config(tmp_path)
    direct = _config(tmp_path, STACK_VARIANT="direct", STACK_API_DATABASE="direct")
    assert stack.api_env()["DATABASE_URL"] == stack.database_url  # through PgBouncer
    url = direct.api_env()["DATABASE_URL"]
    assert url.startswith(f"postgresql://conduit:{stack.secrets.app}@")
    assert url.endswith(f":{stack.ports.postgres}/conduit")


@pytest.mark.parametrize(
    ("name", "value"), [("STACK_VARIANT", "No/Good"), ("STACK_API_DATABASE", "x")]
)
def test_bad_variant_settings_are_refused(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(StackError, match=name):
        _config(tmp_path, **{name: value})


def test_baselines_change_one_setting_each(tmp_path: Path) -> None:
    stack_env = tmp_path / "stack.env"
    stack_env.write_text(
        "API_URL=http://127.0.0.1:8080/api\n"
        "DATABASE_URL=postgresql://conduit:pw@127.0.0.1:6432/conduit\n"
        "DIRECT_DATABASE_URL=postgresql://conduit_owner:pw@127.0.0.1:5433/conduit\n"
        "REDIS_URL=redis://127.0.0.1:6380/0\nAPI_WORKERS=2\nPGBOUNCER_POOL_SIZE=20\n"
    )
    env = Stack.load(tmp_path).scripts_env()
    assert env["STACK_PGBOUNCER_PORT"] == "6432"
    assert env["STACK_POSTGRES_PORT"] == "5433"
    assert env["STACK_REDIS_PORT"] == "6380"
    assert ARCHITECTURES["stack"].variant_env is None
    assert ARCHITECTURES["nocache"].variant_env == {"CACHE_ENABLED": "false"}
    assert ARCHITECTURES["single"].variant_env == {"STACK_ADMISSION": "nginx", "STACK_WORKERS": "1"}
    assert ARCHITECTURES["direct"].variant_env == {
        "STACK_API_DATABASE": "direct",
        "DB_POOL_SIZE": "20",
        "DB_MAX_OVERFLOW": "30",
    }
