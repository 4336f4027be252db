#!/usr/bin/env python3
"""Build a TensorRT engine from an exported ONNX, FP16 by default (see edge/trt_build.py)."""
from cxr_jetson.edge.trt_build import cli

if __name__ == "__main__":
    cli()
