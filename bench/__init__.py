"""Benchmarks: each runs a baseline and ours in the same process and prints the ratio."""
