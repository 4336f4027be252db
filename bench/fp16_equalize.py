"""How far an FP16 network moves output_0 when the in-graph equalisation runs in FP16 too.

    python3 -m bench.fp16_equalize --model MODEL_DIR [--val data/pneumonia/val] [--every 6]

Engines built here keep the equalisation in float32; jetson-inference's FP16 build sets no per-layer
precision, so TensorRT may run it in FP16, where pixel counts above 2048 are not exact. No TensorRT
runs here, so this simulates both with ONNX Runtime's FP16 conversion (edge/tensorrt/fp16_onnx.py's
tool): the float32 model against FP16 with the equalisation kept in float32, and against all-FP16,
on the full-resolution samples and every ``--every``-th validation image. Prints the largest change
of output_0 and the decisions flipped.
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np
import onnx
import onnxruntime

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.model_files import locate_model
from cxr_jetson.core.preprocess import load_for_network, normalize
from cxr_jetson.edge.deployed_model import DeployedModel
from cxr_jetson.edge.tensorrt.fp16_onnx import float32_nodes
from cxr_jetson.edge.tensorrt.fp16_onnx import fp16_model as fp16_keeping_equalisation

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "datasets",
                       "chest_xray_fullres_samples")


def all_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.onnx_model import OnnxModel
    wrapper = OnnxModel(model)
    wrapper.convert_float_to_float16(keep_io_types=True, node_block_list=[])
    wrapper.topological_sort()
    return wrapper.model


def main(args: argparse.Namespace) -> int:
    path = locate_model(args.model, ("onnx",))
    spec = DeployedModel(path, "onnxruntime").spec
    source = onnx.load(path)
    if not float32_nodes(source):
        print("this model has no in-graph equalisation: nothing to compare")
        return 0
    # each conversion works on its own copy: ONNX Runtime's converter changes the graph it is given
    graphs = {"fp32": source, "fp16, equalisation fp32": fp16_keeping_equalisation(onnx.load(path)),
              "all fp16": all_fp16(onnx.load(path))}
    sessions = {name: onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
                for name, graph in graphs.items()}
    images = sorted(glob.glob(os.path.join(SAMPLES, "**", "*.jpeg"), recursive=True))
    images += sorted(glob.glob(os.path.join(args.val, "*", "*")))[::args.every]
    outputs = {name: [] for name in sessions}
    for image in images:
        batch = normalize(load_for_network(image, spec), spec)
        for name, session in sessions.items():
            outputs[name].append(session.run(["output_0"], {"input_0": batch})[0][0])
    reference = np.array(outputs["fp32"])
    print(f"{len(images)} images; against the float32 model:")
    for name in ("fp16, equalisation fp32", "all fp16"):
        other = np.array(outputs[name])
        flips = int(np.sum(reference.argmax(1) != other.argmax(1)))
        print(f"  {name:24} max |output_0 change| {np.abs(reference - other).max():.5f}, decisions flipped {flips}")
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="FP16 equalisation: output_0 change, simulated with ONNX Runtime.")
    parser.add_argument("--model", required=True, help="model dir or .onnx exported with the in-graph equalisation")
    parser.add_argument("--val", default=os.path.join("data", "pneumonia", "val"), help="validation folder")
    parser.add_argument("--every", type=int, default=6, help="take every N-th validation image")
    return parser


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.fp16_equalize")
