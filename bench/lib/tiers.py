"""Where the answers of a step came from: nginx's micro-cache (the `cache=` field of its
access log, deploy/stack/nginx.conf) and, for the requests that reached the API, the deepest
tier each one waited on (`conduit_http_requests_by_tier_total` on the API's /metrics: local,
redis, database, none; app/observability/context.py)."""

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

TIER_COUNTER = "conduit_http_requests_by_tier_total"
API_TIERS = ("local", "redis", "database", "none")
# nginx answered these from its copy: fresh, stale while one request refreshes it, or stale
# because no upstream was left (max_conns).
NGINX_SERVED = ("HIT", "UPDATING", "STALE")
LOG_FLUSH_S = 2.5  # nginx writes its access log every 2 s (deploy/stack/nginx.conf)
# nginx `log_format conduit`: ... "$request" $status $bytes rid=... rt=$request_time ...
ACCESS_LINE = re.compile(r'" (\d{3}) \d+ rid=\S* rt=([\d.]+)(?: urt=(\S+))?(?: cache=(\S+))?')
# nginx's own refusal at max_conns never reaches an upstream: its $upstream_response_time is
# the 0 ms it spent finding none ("no live upstreams" in error.log). An API answer in under a
# millisecond of nginx's clock would read the same: fine for a 503 under overload, where
# the API's own refusals take milliseconds (run s3-overload: none of its 3,472 under 1 ms).
NO_UPSTREAM = ("0.000", "-")


def api_tiers(metrics_url: str) -> dict[tuple[str, str], float] | None:
    """The tier counter of every worker of one uvicorn by ("METHOD route", tier); None when
    /metrics does not answer."""
    try:
        response = httpx.get(metrics_url, timeout=10)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == TIER_COUNTER:
                labels = sample.labels
                key = (
                    f"{labels.get('method', '')} {labels.get('route', '')}".strip(),
                    labels["tier"],
                )
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def cache_statuses(log: Path, offset: int) -> dict[str, int]:
    """The access log's lines from byte `offset` on, by their `cache=` field ("-": none);
    nginx's own 503s at max_conns (no upstream time, as bench.overload reads them) apart, as
    `refused`."""
    counted: Counter[str] = Counter()
    with log.open("rb") as lines:
        lines.seek(offset)
        for raw in lines:
            match = ACCESS_LINE.search(raw.decode(errors="replace"))
            status, upstream_time, cache = (match[1], match[3], match[4]) if match else ("", "", "")
            cache = cache or "-"
            if status == "503" and upstream_time in NO_UPSTREAM and cache not in NGINX_SERVED:
                counted["refused"] += 1
            else:
                counted[cache] += 1
    return dict(counted)


class Tiers:
    """`start()` before a step, `stop()` after it (waits for nginx to write its log)."""

    def __init__(self, access_log: Path | None, metrics_url: str | None) -> None:
        self._log, self._metrics = access_log, metrics_url
        self._offset = 0
        self._api: dict[tuple[str, str], float] | None = None

    def start(self) -> None:
        if self._log is not None and self._log.exists():
            self._offset = self._log.stat().st_size
        self._api = api_tiers(self._metrics) if self._metrics else None

    def stop(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self._log is not None and self._log.exists():
            time.sleep(LOG_FLUSH_S)
            result["nginx_cache"] = cache_statuses(self._log, self._offset)
        after = api_tiers(self._metrics) if self._metrics else None
        if self._api is not None and after is not None:
            routes: dict[str, dict[str, int]] = {}
            for key, value in after.items():
                if n := round(value - self._api.get(key, 0.0)):
                    routes.setdefault(key[0], {})[key[1]] = n
            result["api_tiers"] = {
                tier: sum(r.get(tier, 0) for r in routes.values()) for tier in API_TIERS
            }
            result["api_tier_routes"] = routes
        return result


def shares(step: dict[str, Any]) -> dict[str, float] | None:
    """Each tier's share of all the requests of a step: nginx (its copy), refused by nginx,
    then the API's tiers scaled to the requests that reached the API. None without both
    counts. The API also counts the stack's own probes (/readyz every few seconds), which
    nginx does not log: a few per step."""
    statuses, tiers = step.get("nginx_cache"), step.get("api_tiers")
    if not statuses or tiers is None:
        return None
    total = sum(statuses.values())
    served = sum(statuses.get(s, 0) for s in NGINX_SERVED)
    refused = statuses.get("refused", 0)
    reached = total - served - refused
    api_total = sum(tiers.values())
    result = {"nginx": served / total, "refused by nginx": refused / total}
    for tier in API_TIERS:
        result[tier] = reached / total * tiers[tier] / api_total if api_total else 0.0
    return result
