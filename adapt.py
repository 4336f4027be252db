#!/usr/bin/env python3
"""Adapt a trained model to a new site's images, into a new model dir (see train/adapt.py)."""
from cxr_jetson.train.adapt import cli

if __name__ == "__main__":
    cli()
