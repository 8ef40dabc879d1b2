"""Benchmarks: `python -m bench.<name>` from the project root (see bench/README.md)."""
