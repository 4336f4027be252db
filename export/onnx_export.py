"""onnx_export.py: checkpoint -> self-describing, jetson-inference-compatible ONNX, verified before it is kept.

    python3 onnx_export.py --model-dir models/pneumonia

The ONNX takes ``input_0`` float32 [N, 3, R, R] (ImageNet-normalised, see edge/preprocess.py) and
gives ``output_0`` float32 [N, C] softmax probabilities, jetson-inference's names and semantics, so
``imagenet.py --model=.../resnet18.onnx --input_blob=input_0 --output_blob=output_0`` runs it too
(for a model trained with ``--equalize none``: imagenet.py does not equalise its input).

Opset 13 (IR 7) by default: the newest opset that TensorRT 8.2 (JetPack 4.6, the last JetPack for the
Jetson Nano) parses, and what every later TensorRT reads. The TorchScript exporter is used because
torch's dynamo exporter cannot go below opset 18 (it silently keeps 18 when asked for 13).
The batch dimension is fixed at 1 by default, as jetson-inference builds engines without an
optimisation profile; ``--dynamic-batch`` makes it symbolic for this toolkit's batched runners.

Before the file is kept, ONNX Runtime (the device runner's own back-end) classifies real images
through the shared preprocessing and its probabilities are compared with torch's.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import os
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
import torch.nn as nn

from edge.files import atomic_path
from edge.backends.ort_backend import OnnxRuntimeBackend
from edge.cli import ToolkitError, add_bool_flag, run_cli
from edge.model_info import CAM_OUTPUT, ModelInfo
from data.synthetic import synthetic_xray
from edge.preprocess import PreprocessSpec, load_for_network, normalize, resize_to_network
from edge.sources import SourceError, expand_input
from edge.files import sha256_file
from train.checkpoint import BEST, load_checkpoint, model_info
from train.model import ClassifierWithCam, model_from_checkpoint, supports_cam

DEFAULT_OPSET = 13
TOOLKIT = "cxr-jetson 0.1.0"
VERIFY_IMAGES = 16


class ExportError(ToolkitError):
    """The export failed or did not verify."""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a trained checkpoint to ONNX (jetson-inference compatible) and verify it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model-dir", default="", help="folder of the checkpoint; --input/--output without a "
                                                        "path are taken inside it")
    parser.add_argument("--input", default=BEST, help="checkpoint to export")
    parser.add_argument("--output", default="", help="ONNX file (default: <arch>.onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (13 suits TensorRT 8.2+)")
    add_bool_flag(parser, "dynamic-batch", False,
                  "symbolic batch dimension (jetson-inference needs the default fixed batch of 1)")
    add_bool_flag(parser, "cam", True,
                  f"a second output {CAM_OUTPUT} with class activation maps for classify.py --heatmap (ResNets); "
                  "jetson-inference on TensorRT 10 binds only the outputs it asks for: use --no-cam for it")
    parser.add_argument("--verify-images", default=None, metavar="DIR",
                        help="images to verify on (default: the validation images the model was trained with)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed |probability difference| between ONNX Runtime and torch")
    return parser


def _in_model_dir(model_dir: str, path: str) -> str:
    # jetson-inference's rule: a bare file name lives in --model-dir, a path is taken as given.
    return os.path.join(model_dir, path) if model_dir and not os.path.dirname(path) else path


def export_graph(model: nn.Module, resolution: int, path: str, opset: int, dynamic_batch: bool,
                 outputs: Sequence[str] = ("output_0",)) -> onnx.ModelProto:
    """Export ``model`` to ``path`` and check the result; returns the loaded graph."""
    dummy = torch.zeros(1, 3, resolution, resolution)
    names = ["input_0", *outputs]
    axes = {name: {0: "batch"} for name in names} if dynamic_batch else None
    # torch 2.5 added the dynamo switch (and 2.9 made dynamo the default); before, TorchScript was all.
    choose = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        try:
            torch.onnx.export(model, (dummy,), path, opset_version=opset, input_names=["input_0"],
                              output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True, **choose)
        except Exception as err:  # torch.onnx raises several error types, each with a long graph dump
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ExportError(f"torch cannot export this model at {resolution} px to ONNX opset {opset}: "
                              f"{reason}") from None
    graph = onnx.load(path)
    exported = {entry.domain: entry.version for entry in graph.opset_import}.get("", None)
    if exported != opset:
        raise ExportError(f"asked for opset {opset} but the exporter wrote opset {exported}")
    onnx.checker.check_model(graph)
    return graph


def _add_metadata(graph: onnx.ModelProto, path: str, info: ModelInfo) -> None:
    del graph.metadata_props[:]
    for key, value in sorted(info.to_metadata().items()):
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name, graph.producer_version = TOOLKIT.split()
    graph.doc_string = "Chest X-ray classifier; softmax probabilities in label order. Not a diagnostic device."
    onnx.save(graph, path)


def _verification_images(folder: Optional[str], spec: PreprocessSpec) -> Tuple[np.ndarray, str]:
    """Up to VERIFY_IMAGES real images spread over ``folder``, as uint8 network-size arrays."""
    paths: List[str] = []
    if folder and os.path.isdir(folder):
        try:
            paths = [image.path for image in expand_input(folder)[0]]
        except SourceError:
            paths = []
    if paths:
        chosen = [paths[i] for i in np.linspace(0, len(paths) - 1, min(VERIFY_IMAGES, len(paths))).astype(int)]
        images = []
        for path in chosen:
            try:
                images.append(load_for_network(path, spec))
            except ToolkitError:
                continue
        if images:
            return np.stack(images), f"{len(images)} images from {folder}"
    # No data at hand (e.g. a checkpoint copied alone): drawn X-ray-like pictures still exercise the graph.
    rng = np.random.default_rng(0)
    pictures = [synthetic_xray(rng, i % 2 == 1, spec.resolution * 2, spec.resolution * 2) for i in range(8)]
    return np.stack([resize_to_network(p, spec) for p in pictures]), "8 synthetic images (no data folder found)"


def verify(model: nn.Module, onnx_path: str, images: np.ndarray, spec: PreprocessSpec) -> List[float]:
    """Per output, the largest |ONNX Runtime - torch| over ``images``: absolute for the probabilities,
    relative to the maps' largest magnitude for the activation maps (they are on the logit scale)."""
    batch = normalize(images, spec)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch))
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    backend = OnnxRuntimeBackend(onnx_path, batch_size=len(batch))
    step = backend.max_batch
    actual = [backend.run_all(batch[i:i + step]) for i in range(0, len(batch), step)]
    differences = []
    for index, reference in enumerate(expected):
        error = float(np.max(np.abs(np.concatenate([a[index] for a in actual]) - reference)))
        differences.append(error if index == 0 else error / max(float(np.abs(reference).max()), 1e-12))
    return differences


def export(args: argparse.Namespace) -> str:
    checkpoint_path = _in_model_dir(args.model_dir, args.input)
    checkpoint = load_checkpoint(checkpoint_path)
    info = model_info(checkpoint, provenance={
        "checkpoint": os.path.basename(checkpoint_path), "checkpoint_sha256": sha256_file(checkpoint_path),
        "epoch": checkpoint.get("epoch"), "best": checkpoint.get("best"),
        "val_metrics": {k: v for k, v in (checkpoint.get("val_metrics") or {}).items() if isinstance(v, (int, float))},
        "torch": torch.__version__, "toolkit": TOOLKIT, "opset": args.opset,
        "batch": "dynamic" if args.dynamic_batch else 1,
        "exported_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    classes, spec = info.labels, info.spec
    model = model_from_checkpoint(checkpoint)
    with_cam = args.cam and supports_cam(model) and not checkpoint.get("multi_label")
    if with_cam:
        wrapped, outputs = ClassifierWithCam(model).eval(), ("output_0", CAM_OUTPUT)
    else:
        activation = nn.Sigmoid() if checkpoint.get("multi_label") else nn.Softmax(dim=1)
        wrapped, outputs = nn.Sequential(model, activation).eval(), ("output_0",)
    output = _in_model_dir(args.model_dir or os.path.dirname(checkpoint_path),
                           args.output or f"{checkpoint['arch']}.onnx")
    with atomic_path(output) as temporary:
        graph = export_graph(wrapped, spec.resolution, temporary, args.opset, args.dynamic_batch, outputs)
        _add_metadata(graph, temporary, info)
        data_folder = args.verify_images or _default_verify_folder(checkpoint)
        images, described = _verification_images(data_folder, spec)
        differences = verify(wrapped, temporary, images, spec)
        cam_text = f", {CAM_OUTPUT} relative {differences[1]:.3e}" if len(differences) > 1 else ""
        print(f"=> verified on {described}: max |ONNX Runtime - torch| = {differences[0]:.3e}{cam_text} "
              f"(tolerance {args.tolerance:.0e})")
        if not max(differences) <= args.tolerance:
            raise ExportError(f"ONNX Runtime and torch disagree by {max(differences):.3e} > {args.tolerance:.0e}; "
                              "the ONNX was not written")
    batch = "dynamic batch" if args.dynamic_batch else "batch 1"
    print(f"=> model exported to:  {output}  ({os.path.getsize(output) / 1e6:.1f} MB, opset {args.opset}, {batch})")
    print(f"   input_0 float32 [{'N' if args.dynamic_batch else 1},3,{spec.resolution},{spec.resolution}] -> "
          f"output_0 float32 [{'N' if args.dynamic_batch else 1},{len(classes)}] probabilities of {classes}"
          + (f", {CAM_OUTPUT} class activation maps" if with_cam else "") + f"; threshold {info.threshold}")
    if spec.equalize != "none":
        print(f"   expects {spec.equalize}-equalised input (recorded in its metadata; classify.py and the INT8 "
              "calibrator apply it): jetson-inference's imagenet.py does not equalise, so train with "
              "--equalize none for it")
    return output


def _default_verify_folder(checkpoint: dict) -> Optional[str]:
    data = (checkpoint.get("args") or {}).get("data")
    return os.path.join(data, "val") if data else None


def main(args: argparse.Namespace) -> int:
    export(args)
    return 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "onnx_export.py")
