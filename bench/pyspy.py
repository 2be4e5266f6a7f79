"""Summarise a py-spy raw (collapsed) profile of the API workers into tables (how:
bench/lib/profiles.py; `python -m bench.api_speed --py-spy` records and summarises one).

    .venv/bin/python -m bench.pyspy bench/results/<run>/profile-list.txt --ms 4.1 --top 25
"""

import argparse
from pathlib import Path

from bench.lib.profiles import summarise


def main() -> None:
    parser = argparse.ArgumentParser(description="Summarise a py-spy raw (collapsed) profile")
    parser.add_argument("raw", type=Path)
    parser.add_argument("--within", default="", help="keep samples with a frame containing this")
    parser.add_argument("--ms", type=float, help="CPU ms per request, to show shares as ms")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(summarise(args.raw, cpu_ms_per_request=args.ms, within=args.within, top=args.top))


if __name__ == "__main__":
    main()
