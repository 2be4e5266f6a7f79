"""What the benchmarks in bench/ share. Nothing here runs on its own: the entry points are
bench/<name>.py (`python -m bench.<name>`)."""
