"""Benchmarks: `make bench`. Results go into docs/benchmarks.md."""
