"""Benchmarks (each runs a baseline and ours in the same process and prints the ratio) and the
orchestrators that run several stages at once (compare_models.py). Run from the repository root."""
