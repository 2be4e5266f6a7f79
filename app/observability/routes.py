"""Which route template served a request: the `route` label of the HTTP metrics and log lines.

Never the raw path (one time series per slug would sink Prometheus): `/api/articles/{slug}`,
or UNMATCHED for a path no route serves. Routing leaves the matched route object in
`scope["route"]`; its template is found once, by matching the full path against the app's
templates (the router knows only its own prefix-less part), and remembered per route object.
"""

import re
from typing import Any

from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import Scope

UNMATCHED = "unmatched"


class RouteTemplates:
    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None
        # id(route) -> (route, template); the route is kept so its id cannot be reused.
        self._known: dict[int, tuple[Any, str]] = {}

    def __call__(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None and (known := self._known.get(id(route))) is not None:
            return known[1]
        template = self._resolve(scope["path"], getattr(route, "path_format", None))
        if route is not None:
            self._known[id(route)] = (route, template)
        return template

    def _resolve(self, path: str, suffix: str | None) -> str:
        for pattern, template in self._templates():
            if pattern.match(path) and (suffix is None or template.endswith(suffix)):
                return template
        return suffix or UNMATCHED

    def _templates(self) -> list[tuple[re.Pattern[str], str]]:
        if self._patterns is None:
            # The OpenAPI paths carry the include prefixes; the app's own top-level routes
            # (docs, openapi.json, static files) are not in the schema.
            templates = list(self._app.openapi().get("paths", {}))
            for route in self._app.routes:
                if (template := getattr(route, "path_format", None)) and template not in templates:
                    templates.append(template)
            self._patterns = [(compile_path(template)[0], template) for template in templates]
        return self._patterns
