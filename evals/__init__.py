"""Evaluations and benchmarks that print measured figures; installed as `rftfm_agent.evals`.

- `bench_ingest`: time to ingest N trajectory records (`rftfm bench ingest`).
"""
