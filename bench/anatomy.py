"""CPU cost of each layer of one read request, one request at a time (what each row measures:
bench/lib/layers.py).

    .venv/bin/python -m bench.anatomy --database-url postgresql://...   # a seeded database
"""

import argparse
import asyncio
import os
from pathlib import Path

from bench.lib import layers


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU cost of each layer of a read request")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("-n", type=int, default=300, help="calls per row")
    parser.add_argument("--only", help="run only the layers whose name contains this")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.database_url:
        raise SystemExit("pass --database-url or set DATABASE_URL (a seeded database)")
    rows = asyncio.run(layers.measure(args.database_url, args.n, args.only))
    table = layers.render(rows, args.n)
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
