"""`make cluster` / `make cluster-down`: several API hosts on one machine, each in a network
namespace of its own, in front of a PostgreSQL primary with a streaming replica.

    clients → nginx 127.0.0.1:8280 ─┬→ host 1  10.77.0.11:8000  (netns cnd-api1, uvicorn --workers W)
                                    ├→ host 2  10.77.0.12:8000
                                    └→ host N  ...
    every host → PgBouncer 10.77.0.1:6533 → PostgreSQL primary 10.77.0.1:5533 ──WAL──┐
               → PgBouncer 10.77.0.1:6534 → PostgreSQL replica 10.77.0.1:5534 ◀────┘
               → Redis 10.77.0.1:6381 ◀── the job worker

The components are scripts/stack's, configured differently (same code): this package adds
only what a second machine would (the network, the replica and its PgBouncer, an API per
host, nginx over several upstreams).

Map of the package:
  config.py    ClusterConfig from CLUSTER_* variables; the StackConfig each tier runs with
  network.py   the bridge, the hosts' namespaces and their veth pairs (ip(8))
  nodes.py     Primary and Replica (pg_basebackup), the replica's PgBouncer, HostApi, nginx
  __main__.py  `python -m scripts.cluster up|down|status|kill [component ...]`

State under ./.cluster/ (CLUSTER_DIR), cluster.env beside it, like .stack/stack.env.
"""
