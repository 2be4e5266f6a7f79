"""Exact `articlesCount` in O(1): sharded counters kept by triggers (app/models/counts.py).

- `queries.py`: the count of each list, as a scalar subquery for the page statement;
- `drift.py`: every counter against `count(*)` in one snapshot, and the rebuild;
- `python -m app.counts check|rebuild`: the command over both (docs/DATA.md).
"""
