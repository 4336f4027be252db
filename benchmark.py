#!/usr/bin/env python3
"""Accuracy and speed of every back-end and precision on a labelled folder (see edge/benchmark.py)."""
from cxr_jetson.edge.benchmark import cli

if __name__ == "__main__":
    cli()
