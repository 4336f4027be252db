#!/usr/bin/env python3
"""Classify chest X-ray images and draw the class and confidence on each (see edge/classify.py)."""
from cxr_jetson.edge.classify import cli

if __name__ == "__main__":
    cli()
