"""Benchmarks: each prints its figures next to their baselines from the same run."""
