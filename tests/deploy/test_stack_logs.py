"""`make stack` keeps one previous generation of each component's logs, so a day of load
tests cannot fill the disk (nginx alone wrote 2.4 GB in one day of benchmarks)."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.stack import system
from scripts.stack.base import Component
from scripts.stack.config import StackConfig
from scripts.stack.web import Nginx


def _nginx(tmp_path: Path) -> Nginx:
    nginx = Nginx(StackConfig.from_env({"STACK_DIR": str(tmp_path)}))
    nginx.dir.mkdir(parents=True)
    return nginx


def test_the_previous_run_is_kept_and_older_ones_dropped(tmp_path: Path) -> None:
    nginx = _nginx(tmp_path)
    (nginx.dir / "error.log").write_text("last run\n")
    (nginx.dir / "access.log").write_text("last run\n")
    (nginx.dir / "error.log.1").write_text("the run before\n")
    nginx.rotate_logs()
    assert not (nginx.dir / "error.log").exists()
    assert not (nginx.dir / "access.log").exists()
    assert (nginx.dir / "error.log.1").read_text() == "last run\n"
    assert (nginx.dir / "access.log.1").read_text() == "last run\n"


def test_an_empty_log_does_not_replace_the_previous_one(tmp_path: Path) -> None:
    nginx = _nginx(tmp_path)
    (nginx.dir / "error.log").write_text("")
    (nginx.dir / "error.log.1").write_text("the run before\n")
    nginx.rotate_logs()
    assert (nginx.dir / "error.log.1").read_text() == "the run before\n"


@dataclass(frozen=True)
class _Recorder(Component):
    name: str = "api"

    def pid(self) -> int | None:
        return None

    def start(self) -> None:
        self.log_file.write_text("this run\n")

    def ready(self) -> bool:
        return True


def test_up_rotates_before_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "check_port_free", lambda *_: None)
    component = _Recorder(StackConfig.from_env({"STACK_DIR": str(tmp_path)}))
    component.dir.mkdir(parents=True)
    component.log_file.write_text("last run\n")
    component.up()
    assert component.log_file.read_text() == "this run\n"
    assert component.log_file.with_name("api.log.1").read_text() == "last run\n"
