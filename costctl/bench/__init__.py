"""Benchmarks behind `costctl bench ...`; each module exposes ``register(bench_app)``."""
