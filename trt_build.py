#!/usr/bin/env python3
"""Build a TensorRT engine from an exported ONNX, FP16 by default (see export/trt_build.py)."""
from export.trt_build import cli

if __name__ == "__main__":
    cli()
