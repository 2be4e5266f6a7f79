"""PNG charts of a load test: load vs p99, vs PostgreSQL connections, vs requests/s, one line
per architecture; Locust users (think time) on the left, wrk connections on the right."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from bench.lib.load_report import errors, ok_rps
from bench.lib.targets import ARCHITECTURES

METRICS = {
    "p99": ("p99_ms", "p99 latency (ms)", True),
    "postgres-connections": ("pg_backends_peak", "peak PostgreSQL client backends", False),
    "rps": ("ok_rps", "requests/s answered 2xx", False),
}
PANELS = {"mixed": "users with think time (Locust)", "wrk": "connections, no think time (wrk)"}
STYLE = {
    "stack": ("tab:green", "o"),
    "nocache": ("tab:olive", "D"),
    "direct": ("tab:red", "s"),
    "single": ("tab:blue", "^"),
}


def _series(
    steps: Sequence[Mapping[str, Any]], phase: str, field: str
) -> dict[str, list[tuple[int, float, float]]]:
    """Per architecture: (load, value, share of failed requests)."""
    lines: dict[str, list[tuple[int, float, float]]] = {}
    for step in steps:
        value = ok_rps(step) if field == "ok_rps" else step.get(field)
        if step["phase"] == phase and value is not None:
            failed, _ = errors(step)
            share = failed / max(int(step.get("requests") or 0), 1)
            point = (int(step["load"]), float(value), share)
            lines.setdefault(step["architecture"], []).append(point)
    return lines


def draw(steps: Sequence[Mapping[str, Any]], out: Path) -> list[str]:
    """The PNG files written into `out`, by name."""
    made: list[str] = []
    phases = [p for p in PANELS if any(s["phase"] == p for s in steps)]
    if not phases:
        return made
    for name, (field, label, log_y) in METRICS.items():
        figure, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4.2), squeeze=False)
        for ax, phase in zip(axes[0], phases, strict=True):
            for key, points in _series(steps, phase, field).items():
                points.sort()
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                colour, marker = STYLE.get(key, ("tab:gray", "x"))
                ax.plot(xs, ys, marker=marker, color=colour, label=ARCHITECTURES[key].label)
                for x, y, share in points:
                    if share > 0:  # a point that hides failed requests says so
                        text = f"{share:.0%} failed" if share >= 0.01 else "<1% failed"
                        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4),
                                    fontsize=7, color=colour)  # fmt: skip
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
            if field == "pg_backends_peak":
                ax.axhline(
                    20, color="gray", linestyle="--", linewidth=1, label="PgBouncer pool (20)"
                )
            if field == "p99_ms" and phase == "mixed":
                ax.axhline(150, color="gray", linestyle=":", linewidth=1, label="target 150 ms")
            ax.set_xlabel(PANELS[phase])
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        figure.tight_layout()
        path = out / f"{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        made.append(path.name)
    return made
