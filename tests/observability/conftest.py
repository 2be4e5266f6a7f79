"""promtool (Debian's `prometheus` package) for the rule, config and dashboard checks.

It is installed when missing and running as root, as `make stack` does; without it these
tests fail, never skip: the rules would go unchecked."""

import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.stack import system
from tests.observability.names import ROOT


@pytest.fixture(scope="session")
def promtool() -> str:
    if shutil.which("promtool") is None:
        system.ensure_packages()  # apt-get as root; otherwise a StackError naming the command
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus")
    return path


def run(promtool: str, *args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(  # noqa: S603 - promtool
        [promtool, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
