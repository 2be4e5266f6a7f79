"""The Markdown report of one bench.loadtest run (bench/results/<UTC>/report.md)."""

from collections.abc import Mapping, Sequence
from typing import Any

from bench.lib import markdown, tiers
from bench.lib.targets import ARCHITECTURES

Step = Mapping[str, Any]
CPU_GROUPS = (
    "nginx", "API", "PgBouncer", "PostgreSQL", "Redis", "Redis queue", "load generator", "other", "idle",
)  # fmt: skip
TIERS_NOTE = (
    "Where the requests were answered, as shares of the step's requests in nginx's access log "
    "(arrival included): nginx's micro-cache (`cache=` HIT, UPDATING, STALE), nginx's own 503 "
    "at `max_conns`, and the rest by the deepest tier the API waited on "
    "(`conduit_http_requests_by_tier_total`: L1 only, Redis, PostgreSQL, none)."
)
PHASES = {
    "wrk": "Raw load: wrk, mixed reads, no think time",
    "mixed": "User journeys with think time (Locust, mixed)",
    "storm": "Favorite storm",
    "viral": "Viral article (stack)",
    "burst": "Sign-up/login burst (stack)",
}


def errors(step: Step) -> tuple[int, str]:
    """(how many, what) of a step's failed requests."""
    if step["phase"] == "wrk":
        kinds: Mapping[str, int] = step.get("errors") or {}
        total = int(step.get("non_2xx", 0)) + int(step.get("socket_errors", 0))
    elif step["phase"] == "storm":
        statuses: Mapping[str, int] = step.get("statuses") or {}
        kinds = {k: n for k, n in statuses.items() if not k.endswith(" 200")}
        total = sum(kinds.values())
    else:
        kinds = step.get("errors") or {}
        total = int(step.get("failures_total", 0))
    return total, markdown.tally(sorted(kinds.items(), key=lambda x: -x[1]))


def ok_rps(step: Step) -> float:
    """Requests per second answered without error (a fast 503 is not throughput)."""
    failed, _ = errors(step)
    total = int(step.get("requests") or step.get("favorite_requests") or 0)
    rps = float(step.get("rps") or 0)
    return rps * (1 - failed / total) if total else rps


def _pg(step: Step) -> str:
    peak = step.get("pg_backends_peak")
    return "n/a" if peak is None else str(peak)


def _pgbouncer(step: Step) -> str:
    waiting = step.get("pgb_cl_waiting_peak")
    if waiting is None:
        return "n/a"
    return f"{waiting} / {step.get('pgb_maxwait_ms_peak') or 0:,.0f} ms"


def _ratio(step: Step) -> str:
    ratio = step.get("redis_hit_ratio")
    return "-" if ratio is None else f"{ratio:.0%}"


def _log(step: Step) -> str:
    logged: Mapping[str, int] = step.get("postgres_log") or {}
    return markdown.tally(logged.items()) or "-"


def one_line(step: Step) -> str:
    count, what = errors(step)
    return (
        f"{step['phase']:<6} {step['architecture']:<7} {step['load']:>6,}  "
        f"{step.get('rps', 0):8,.1f} req/s  p50 {step.get('p50_ms', 0):8,.1f}  "
        f"p99 {step.get('p99_ms', 0):8,.1f}  max {step.get('max_ms', 0):8,.1f} ms  "
        f"errors {count:,}{f' ({what})' if what else ''}  PG peak {_pg(step)}  "
        f"PgBouncer waiting/maxwait {_pgbouncer(step)}"
    )


def _label(key: str) -> str:
    return ARCHITECTURES[key].label if key in ARCHITECTURES else key


def load_table(steps: Sequence[Step], phase: str) -> str:
    unit = "connections" if phase == "wrk" else "users"
    header = ["architecture", unit, "req/s", "2xx req/s", "p50 ms", "p99 ms", "max ms", "errors"]
    header += ["peak PG backends", "PgBouncer waiting / maxwait", "Redis hit ratio"]
    header += ["PostgreSQL log", "error kinds"]
    rows = []
    for s in steps:
        if s["phase"] != phase:
            continue
        count, what = errors(s)
        rows.append([
            _label(s["architecture"]), f"{s['load']:,}", f"{s.get('rps', 0):,.1f}",
            f"{ok_rps(s):,.1f}", f"{s.get('p50_ms', 0):,.0f}", f"{s.get('p99_ms', 0):,.0f}",
            f"{s.get('max_ms', 0):,.0f}", f"{count:,}", _pg(s), _pgbouncer(s), _ratio(s), _log(s),
            what or "-",
        ])  # fmt: skip
    return markdown.table(header, rows, left=2, text_from=11)


def compact_table(steps: Sequence[Step], phase: str) -> str:
    """By load, then architecture: the figures to compare side by side."""
    unit = "connections" if phase == "wrk" else "users"
    header = [unit, "architecture", "req/s", "2xx req/s", "p50 ms", "p99 ms", "failed"]
    header += ["peak PG backends", "failures"]
    order = list(ARCHITECTURES)
    chosen = sorted(
        (s for s in steps if s["phase"] == phase),
        key=lambda s: (
            s["load"],
            order.index(s["architecture"]) if s["architecture"] in order else 99,
        ),
    )
    rows = []
    for s in chosen:
        count, what = errors(s)
        total = s.get("requests") or 0
        share = f" ({count / total:.0%})" if count and total else ""
        rows.append([
            f"{s['load']:,}", _label(s["architecture"]), f"{s.get('rps', 0):,.0f}",
            f"{ok_rps(s):,.0f}", f"{s.get('p50_ms', 0):,.0f}", f"{s.get('p99_ms', 0):,.0f}",
            f"{count:,}{share}", _pg(s), what or "-",
        ])  # fmt: skip
    return markdown.table(header, rows, left=2, text_from=8)


def cpu_table(steps: Sequence[Step], phase: str) -> str:
    header = ["architecture", "load", *CPU_GROUPS]
    rows = [
        [_label(s["architecture"]), f"{s['load']:,}"]
        + [f"{s['cpu'][g]:.2f}" if g in s.get("cpu", {}) else "-" for g in CPU_GROUPS]
        for s in steps
        if s["phase"] == phase
    ]
    return markdown.table(header, rows, left=2)


def tiers_table(steps: Sequence[Step], phase: str) -> str:
    """Where a step's requests were answered (bench/lib/tiers.py); empty when not counted."""
    header = ["architecture", "load", "requests (nginx log)", "nginx micro-cache"]
    header += ["refused by nginx", "L1 only", "Redis", "PostgreSQL", "none", "no PostgreSQL"]
    rows = []
    for s in steps:
        if s["phase"] != phase or (share := tiers.shares(dict(s))) is None:
            continue
        cells = [share[k] for k in ("nginx", "refused by nginx", *tiers.API_TIERS)]
        rows.append(
            [_label(s["architecture"]), f"{s['load']:,}", f"{sum(s['nginx_cache'].values()):,}"]
            + [f"{100 * x:.1f} %" for x in cells]
            + [f"{100 * (1 - share['database']):.1f} %"]
        )
    return markdown.table(header, rows, left=2) if rows else ""


def tier_routes_table(steps: Sequence[Step], phase: str, least: float = 0.01) -> str:
    """The API's requests by route and tier, for routes with at least `least` of a step's."""
    header = ["architecture", "load", "route", "at the API", *tiers.API_TIERS]
    rows = []
    for s in steps:
        routes: dict[str, dict[str, int]] = s.get("api_tier_routes") or {}
        if s["phase"] != phase or not routes:
            continue
        total = sum(sum(r.values()) for r in routes.values())
        ordered = sorted(routes.items(), key=lambda item: -sum(item[1].values()))
        for route, counted in ordered:
            if sum(counted.values()) >= least * total:
                rows.append(
                    [_label(s["architecture"]), f"{s['load']:,}", f"`{route}`"]
                    + [f"{sum(counted.values()):,}"]
                    + [f"{counted.get(t, 0):,}" for t in tiers.API_TIERS]
                )
    return markdown.table(header, rows, left=3) if rows else ""


def storm_table(steps: Sequence[Step]) -> str:
    header = ["architecture", "users", "favorite req/s", "p50 ms", "p99 ms", "max ms", "answers"]
    header += ["favoritesCount", "favorite rows", "confirmed on / off", "lost / phantom"]
    header += ["unsure (with row)", "exact", "peak PG backends"]
    rows = []
    for s in steps:
        if s["phase"] != "storm":
            continue
        answers = markdown.tally(sorted((s.get("statuses") or {}).items()))
        rows.append([
            _label(s["architecture"]), f"{s['load']:,}", f"{s.get('rps', 0):,.1f}",
            f"{s.get('p50_ms', 0):,.0f}", f"{s.get('p99_ms', 0):,.0f}", f"{s.get('max_ms', 0):,.0f}",
            answers, str(s.get("favoritesCount_api")), str(s.get("favorite_rows")),
            f"{s.get('confirmed_on')} / {s.get('confirmed_off')}",
            f"{s.get('lost')} / {s.get('phantom')}", f"{s.get('unsure')} ({s.get('unsure_on')})",
            "yes" if s.get("exact") else "**no**", _pg(s),
        ])  # fmt: skip
    return markdown.table(header, rows, left=2, text_from=6)


def targets(steps: Sequence[Step]) -> str:
    """The issue's targets for the stack, checked against this run."""
    mine = [s for s in steps if s["architecture"] == "stack"]
    if not mine:
        return "_the stack was not measured in this run_\n"
    failing = [s for s in mine if errors(s)[0]]
    peak = max(
        (s["pg_backends_peak"] for s in mine if s.get("pg_backends_peak") is not None), default=None
    )
    at_1000 = [s for s in mine if s["phase"] == "mixed" and s["load"] == 1000]
    failed = "; ".join(f"{s['phase']} {s['load']:,}: {errors(s)[0]:,}" for s in failing)
    rows = [
        ["zero errors at every step", failed or "none", "no" if failing else "yes"],
        [
            "PostgreSQL client backends ≤ 20 at every step",
            f"peak {peak}",
            "yes" if peak is not None and peak <= 20 else "no",
        ],
    ]
    p99_target = "p99 ≤ 150 ms at 1,000 users with think time"
    if at_1000:
        p99 = at_1000[0]["p99_ms"]
        rows.append([p99_target, f"{p99:,.0f} ms", "yes" if p99 <= 150 else "no"])
    else:
        rows.append([p99_target, "not measured in this run", "-"])
    return markdown.table(["target", "result", "met"], rows, left=3)


def collapses(steps: Sequence[Step]) -> list[str]:
    """Where each architecture first failed requests, per phase, and how."""
    lines = []
    for key in ARCHITECTURES:
        for phase in ("wrk", "mixed", "storm"):
            ordered = sorted(
                (s for s in steps if s["architecture"] == key and s["phase"] == phase),
                key=lambda s: s["load"],
            )
            first = next((s for s in ordered if errors(s)[0]), None)
            if first is None:
                if ordered:
                    lines.append(
                        f"- {_label(key)}, {PHASES[phase]}: no failed request up to {ordered[-1]['load']:,}."
                    )
                continue
            count, what = errors(first)
            total = first.get("requests") or first.get("favorite_requests") or 0
            lines.append(
                f"- {_label(key)}, {PHASES[phase]}: fails from **{first['load']:,}** on: "
                f"{count:,} failed of {total:,} requests ({what}); PostgreSQL logged: {_log(first)}; "
                f"peak PostgreSQL backends {_pg(first)}."
            )
    return lines


def render(meta: Mapping[str, Any], steps: Sequence[Step], charts: Sequence[str]) -> str:
    args = meta["args"]
    present = [p for p in PHASES if any(s["phase"] == p for s in steps)]
    lines = [
        f"# Load test, {meta['started'][:16].replace('T', ' ')} UTC",
        "",
        f"`{meta.get('command', 'python -m bench.loadtest')}` — {meta['minutes']} min measuring, "
        f"all on one machine ({meta['machine'].get('cores (nproc)', '?')} cores, shared with "
        "the load generator and other users' work: read ratios within this run).",
        "",
        _contention(steps),
        "",
        "Architectures (same code, same data, same machine; baselines switched by configuration):",
        "",
        *[
            f"- **{a.label}**: {a.description}"
            for k, a in ARCHITECTURES.items()
            if k in args["architectures"]
        ],
        "- Every architecture but `cache off` runs with the read cache on (the default); each "
        "baseline changes one thing against the stack.",
        "",
        "Columns: PostgreSQL backends are the app role's client backends in `pg_stat_activity`, "
        "sampled every 100 ms (peak); PgBouncer waiting / maxwait are the peaks of `SHOW POOLS` "
        "`cl_waiting` and `maxwait`, same interval; `Redis hit ratio` is Redis's keyspace hits / "
        "(hits + misses) over the step, every key counted (cache entries, their version keys, "
        "leases): a proxy of the cache's hit ratio; `PostgreSQL log` counts the server's own "
        "error lines during the step.",
        "",
        *_harness_failures(meta),
        "## Targets for the stack",
        "",
        targets(steps),
        "## Where each architecture fails, and how",
        "",
        *collapses(steps),
        "",
    ]
    for phase in ("mixed", "wrk"):
        if phase in present:
            lines += [f"## Summary: {PHASES[phase]}", "", compact_table(steps, phase)]
    lines += [f"![{c}]({c})" for c in charts] + [""]
    for phase in present:
        lines += [f"## {PHASES[phase]}", "", _phase_note(phase, args), ""]
        lines += [storm_table(steps) if phase == "storm" else load_table(steps, phase)]
        lines += ["CPU in cores busy while measuring (`other`: the rest of the machine):", ""]
        lines += [cpu_table(steps, phase)]
        if table := tiers_table(steps, phase):
            lines += [TIERS_NOTE, "", table]
        if table := tier_routes_table(steps, phase):
            lines += ["The API's requests by route and tier (routes with ≥ 1 % of them):", ""]
            lines += [table]
    lines += [
        "## Data set",
        "",
        markdown.counts(meta["dataset"]),
    ]
    facts = {
        **meta["machine"],
        **meta["packages"],
        **{f"stack {k}": v for k, v in meta["stack"].items()},
    }
    lines += [
        "## Machine and versions",
        "",
        markdown.facts(facts),
    ]
    lines += [
        "Raw figures: `results.json`; wrk output `wrk-*.txt`; Locust CSVs and logs `locust-*`.",
        "",
    ]
    return "\n".join(lines)


def _harness_failures(meta: Mapping[str, Any]) -> list[str]:
    failures = meta.get("harness_failures") or []
    if not failures:
        return []
    lines = ["## Phases that could not run", ""]
    lines += [f"- {f['architecture']}, {f['phase']}: `{f['error']}`" for f in failures]
    return [*lines, ""]


def _contention(steps: Sequence[Step]) -> str:
    """How much of the machine other people's processes took while we measured."""
    other = [s["cpu"]["other"] for s in steps if "other" in s.get("cpu", {})]
    if not other:
        return ""
    return (
        f"While measuring, processes outside the stack and the load generator used "
        f"{sum(other) / len(other):.2f} cores on average (from {min(other):.2f} to "
        f"{max(other):.2f}; the `other` CPU column): the architectures shared what was left."
    )


def _phase_note(phase: str, args: Mapping[str, Any]) -> str:
    think = "-".join(str(x) for x in args["think_s"])
    return {
        "wrk": f"Closed loop: every connection sends its next request as soon as the answer "
        f"arrives, {args['duration']} s per step after a warm-up; 30 % article list pages, 10 % tag "
        "pages, 30 % single articles, 20 % comments, 10 % profiles, 20 % with a logged-in token. "
        f"wrk timeout {args['wrk_timeout']:g} s (latencies above it are not in the percentiles).",
        "mixed": f"Each user: front page (+ tags), open article (+ comments), tag page, profile "
        f"(+ their articles); 20 % are members (5 % of them log in, the rest resume a session) who "
        f"also read their feed, favorite, follow, comment, publish. Think time {think} s between "
        f"page views. Users start evenly over {args['ramp']:g} s; {args.get('settle', 0):g} s after "
        f"the last has started the statistics are reset and {args['journey_time']} s are measured "
        "(the steady state; req/s = requests in that window / its length).",
        "storm": "Every user holds an open connection, then all favorite one fresh article at once; "
        "20 % favorite it again (a no-op), 10 % take it back. `confirmed on / off`: users all of "
        "whose requests were answered 2xx, told they do / do not favorite the article; `lost`: "
        "confirmed on without a row, `phantom`: confirmed off with a row (both must be 0); "
        "`unsure`: users with an error answer (503 shed, 504 past the deadline), for whom either "
        "state is right, and how many of them have a row. `exact`: favoritesCount = rows, and "
        "no lost or phantom favorite.",
        "viral": f"As the journeys, but 80 % of article views (and members' favorites and comments) "
        f"go to one article; think time {think} s.",
        "burst": "Every user arrives within a second or two: half sign up, half log in (argon2), then "
        "read the front page.",
    }[phase]
