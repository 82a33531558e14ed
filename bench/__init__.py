"""smalldata's benchmarks (results in BENCHMARKS.md); run one from the repo root: `python -m bench.NAME --help`."""
