#!/usr/bin/env python3
"""Export a trained checkpoint to a verified, jetson-inference-compatible ONNX (see export/onnx_export.py)."""
from cxr_jetson.export.onnx_export import cli

if __name__ == "__main__":
    cli()
