"""Fill a migrated Conduit database with a reproducible, realistic data set, fast (how:
bench/lib/seeding.py). Every user's password is `password`:

    .venv/bin/python -m bench.seed --size small --truncate
    .venv/bin/python -m bench.seed --users 10000 --articles 100000   # defaults
    .venv/bin/python -m bench.seed --size large --truncate   # 1,000,000 articles (bench.sizes)
"""

import argparse
import os
from collections.abc import Sequence
from dataclasses import fields, replace

from bench.lib.seeding import PRESETS, Sizes, fill


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", choices=sorted(PRESETS), default="default")
    for field in fields(Sizes):
        parser.add_argument(f"--{field.name}", type=int, help="overrides the --size preset")
    parser.add_argument("--truncate", action="store_true", help="empty the tables first")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.database_url:
        raise SystemExit("no database: pass --database-url or set DATABASE_URL")
    overrides = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    sizes = replace(PRESETS[args.size], **{k: v for k, v in overrides.items() if v is not None})
    fill(args.database_url, sizes, seed=args.seed, truncate=args.truncate)


if __name__ == "__main__":
    main()
