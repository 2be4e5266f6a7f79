"""bench/ reads as bench/README.md says: the entry points at the top, the library they share
in bench/lib/, and one Markdown table writer. Checked with an `ast` walk, like
tests/test_architecture.py does for app/."""

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
LIB = BENCH / "lib"
# Started by another program rather than `python -m`: uvicorn serves bare_app, Locust runs
# journeys (never imported: Locust patches the standard library with gevent).
STARTED_BY_OTHERS = {"bare_app", "journeys"}


def _entry_points() -> list[Path]:
    return [path for path in sorted(BENCH.glob("*.py")) if path.name != "__init__.py"]


def _bench_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name == "bench" or name.startswith("bench.")}


def _outside_lib(path: Path) -> set[str]:
    return {name for name in _bench_imports(path) if not name.startswith("bench.lib")}


def test_every_top_level_module_is_an_entry_point():
    for path in _entry_points():
        if path.stem not in STARTED_BY_OTHERS:
            assert 'if __name__ == "__main__":' in path.read_text(), path.name


def test_entry_points_share_only_the_library():
    assert {path.name: _outside_lib(path) for path in _entry_points()} == {
        path.name: set() for path in _entry_points()
    }


def test_the_library_imports_no_entry_point():
    modules = sorted(LIB.glob("*.py"))
    assert {path.name: _outside_lib(path) for path in modules} == {
        path.name: set() for path in modules
    }


def test_only_the_markdown_module_spells_a_table():
    # The alignment row is what every hand-written table has and a call to markdown.table lacks.
    spelled = [
        path.relative_to(BENCH).as_posix()
        for path in sorted(BENCH.rglob("*.py"))
        if path != LIB / "markdown.py"
        and ("---:" in path.read_text() or "| --- |" in path.read_text())
    ]
    assert spelled == []
