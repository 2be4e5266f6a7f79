"""The layering rules of ../shared/STYLE.md, checked with an `ast` walk over app/."""

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
FEATURES = {"users", "profiles", "articles", "comments", "tags", "imports", "webhooks", "events"}
WEB = ("fastapi", "starlette")


def _modules() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(APP.parent).with_suffix("")).replace("/", "."): ast.parse(
            path.read_text()
        )
        for path in APP.rglob("*.py")
    }


def _imports(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_only_main_imports_routers():
    offenders = [
        name
        for name, tree in _modules().items()
        if name != "app.main" and any(imported.endswith(".router") for imported in _imports(tree))
    ]
    assert offenders == []


def test_domain_code_does_not_know_the_web_framework():
    offenders = []
    for name, tree in _modules().items():
        domain = name.startswith("app.models") or name == "app.errors" or name.endswith(".service")
        if domain and any(imported.split(".")[0] in WEB for imported in _imports(tree)):
            offenders.append(name)
    assert offenders == []


def test_models_import_no_feature_package():
    offenders = [
        name
        for name, tree in _modules().items()
        if name.startswith("app.models")
        and any(
            imported.split(".")[1:2] and imported.split(".")[1] in FEATURES
            for imported in _imports(tree)
        )
    ]
    assert offenders == []


def test_services_use_other_features_through_their_service_module():
    """`from app.profiles import service as profiles`, never reaching into another feature's
    queries or router."""
    offenders = []
    for name, tree in _modules().items():
        parts = name.split(".")
        if len(parts) != 3 or parts[1] not in FEATURES:
            continue
        for imported in _imports(tree):
            bits = imported.split(".")
            other = bits[1] if len(bits) > 1 and bits[0] == "app" else None
            if (
                other in FEATURES
                and other != parts[1]
                and bits[2:3] not in (["service"], ["schemas"], [])
            ):
                offenders.append(f"{name} -> {imported}")
    assert offenders == []


def test_services_never_commit():
    offenders = []
    for name, tree in _modules().items():
        if not name.endswith(".service"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "commit":
                offenders.append(name)
    assert offenders == []
