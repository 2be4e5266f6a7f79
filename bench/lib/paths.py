"""Where the benchmarks find the repository and write their results."""

from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"  # git-ignored (bench/results/README.md)


def folder(out: Path | None, started: datetime, suffix: str = "") -> Path:
    """`out`, or one folder per run: bench/results/<UTC start><suffix>; made if missing."""
    chosen = out or RESULTS / f"{started:%Y%m%dT%H%M%SZ}{suffix}"
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen
