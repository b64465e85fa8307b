"""Benchmarks: inference, serving and training speed. Run each from the repository root,
e.g. `python -m bench.inference --help`; see bench/README.md."""
