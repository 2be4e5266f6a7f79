"""The layering rules of ../shared/STYLE.md, checked with an `ast` walk over app/."""

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
FEATURES = {"users", "profiles", "articles", "comments", "tags", "imports", "webhooks", "events"}
# Platform packages serve every feature and know none of them.
PLATFORM = ("app.cache", "app.middleware", "app.observability")
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
    # ... and the hot reads' routes, which go beside the routers' and answer through them.
    wiring = {"app.main", "app.hot_reads"}
    offenders = [
        name
        for name, tree in _modules().items()
        if name not in wiring and any(imported.endswith(".router") for imported in _imports(tree))
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


def test_only_the_transaction_module_commits():
    """Commit and its after-effects (cache versions, deferred jobs) have one owner."""
    offenders = [
        name
        for name, tree in _modules().items()
        if name != "app.transaction"
        and any(
            isinstance(node, ast.Attribute)
            and node.attr == "commit"
            and not (isinstance(node.value, ast.Name) and node.value.id == "transaction")
            for node in ast.walk(tree)
        )
    ]
    assert offenders == []


def test_platform_modules_import_no_feature_package():
    offenders = [
        f"{name} -> {imported}"
        for name, tree in _modules().items()
        if name.startswith(PLATFORM)
        for imported in _imports(tree)
        if imported.split(".")[:2] in (["app", feature] for feature in FEATURES)
    ]
    assert offenders == []


def test_the_lifespan_state_is_read_through_one_accessor():
    """`app_state(scope)` (app/state.py), never `request.state.x` or `scope["state"][...]`."""
    offenders = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "state"
                and name != "app.state"
                and isinstance(node.value, ast.Name)
                and node.value.id in ("request", "app")
            ):
                offenders.append(f"{name}:{node.lineno}")
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id == "scope"
                and isinstance(node.slice, ast.Constant)
                and node.slice.value == "state"
                and name != "app.state"
            ):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []
