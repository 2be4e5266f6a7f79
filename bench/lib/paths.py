"""Where the benchmarks find the repository and write their results."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"  # one git-ignored folder per run (bench/results/README.md)
