#!/usr/bin/env python3
"""Train a chest X-ray classifier the jetson-inference way (see train/main.py)."""
from cxr_jetson.train.main import cli

if __name__ == "__main__":
    cli()
