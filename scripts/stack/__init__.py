"""`make stack` / `make stack-down`: the scale topology on one machine, from Debian packages.

    nginx :8080 (+ TLS/HTTP2 :8443) → uvicorn --workers K :8001 → PgBouncer :6432 → PostgreSQL :5433
                                                                 └→ Redis :6380
    Prometheus :9090 ← the API's /metrics, the exporter :9127 (PgBouncer, nginx, readiness)

Map of the package:
  config.py      StackConfig from STACK_* / app environment variables, the sizing rule, secrets
  system.py      processes (pid files, signals, run-as the service user), waiting, packages
  base.py        Component: `up` (start unless running, wait until it answers), `down`
  data.py        PostgreSQL (roles, database, migrations), PgBouncer, Redis
  web.py         the API workers (uvicorn --workers K) and nginx
  monitoring.py  the exporter (PgBouncer, nginx, readiness) and Prometheus
  __main__.py    `python -m scripts.stack up|down|status [component ...]`

Configs are templates under deploy/stack/, rendered into the state dir (./.stack/).
"""
