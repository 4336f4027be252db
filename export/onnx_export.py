"""onnx_export.py: checkpoint -> self-describing, jetson-inference-compatible ONNX, verified before it is kept.

    python3 onnx_export.py --model-dir models/pneumonia

The ONNX takes ``input_0`` float32 [N, 3, R, R] (ImageNet-normalised, see core/preprocess.py) and
gives ``output_0`` float32 [N, C] softmax probabilities, jetson-inference's names and semantics, so
``imagenet.py --model=.../resnet18.onnx --input_blob=input_0 --output_blob=output_0`` runs it too
(for a model trained with ``--equalize none``: imagenet.py does not equalise its input).

The batch dimension is fixed at 1 by default, as jetson-inference builds engines without an
optimisation profile; ``--dynamic-batch`` makes it symbolic for this toolkit's batched runners.
Before the file is kept, ONNX Runtime classifies real images through the shared preprocessing and
its probabilities are compared with torch's (export/verify.py). Other code exports through
``export_onnx(ExportOptions(...))``; this module's parser only builds those options.
"""
from __future__ import annotations

import argparse
import datetime
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from cxr_jetson.core.cli import add_bool_flag, run_cli
from cxr_jetson.core.files import atomic_path, check_writable, sha256_file
from cxr_jetson.core.model_files import in_model_dir
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import (
    BEST_CHECKPOINT,
    CAM_NAME,
    GATE_NAME,
    INPUT_NAME,
    INT8_ONNX_SUFFIX,
    OUTPUT_NAME,
    TOOLKIT,
    TOOLKIT_VERSION,
)
from cxr_jetson.export.graph import DEFAULT_OPSET, ExportError, export_graph, write_metadata
from cxr_jetson.export.int8_guard import GuardBounds, guard
from cxr_jetson.export.quantize import FORMS, METHODS, calibration_images, quantize, write_record
from cxr_jetson.export.verify import verification_images, verify
from cxr_jetson.networks.checkpoint import load_checkpoint
from cxr_jetson.networks.deployable import deployment
from cxr_jetson.networks.input_gate import GATE_FILE, gate_beside


@dataclass(frozen=True)
class ExportOptions:
    model_dir: str = ""                  # --input and --output without a path are taken inside it
    input: str = BEST_CHECKPOINT
    output: str = ""                     # default: <arch>.onnx beside the checkpoint
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = False
    cam: bool = True
    fold_threshold: bool = True          # output_0 on the decision scale: argmax decides as the threshold
    gate: bool = True                    # the input gate fitted beside the checkpoint, as output gate_0
    verify_images: Optional[str] = None  # default: the validation images the model was trained with
    tolerance: float = 1e-4
    int8: bool = False                   # also write <arch>.int8.onnx, if the accuracy guard passes
    int8_form: str = "tensorrt"
    calibration_images: Optional[str] = None  # default: the training images the model learnt from
    calibration_count: int = 256
    calibration_method: str = "minmax"
    max_auc_drop: float = GuardBounds.max_auc_drop
    max_changed: float = GuardBounds.max_changed
    force_int8: bool = False             # write the INT8 ONNX even outside the guard's bounds

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ExportOptions":
        return cls(**{name: getattr(args, name) for name in cls.__dataclass_fields__})


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a trained checkpoint to ONNX (jetson-inference compatible) and verify it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model-dir", default="", help="folder of the checkpoint; --input/--output without a "
                                                        "path are taken inside it")
    parser.add_argument("--input", default=BEST_CHECKPOINT, help="checkpoint to export")
    parser.add_argument("--output", default="", help="ONNX file (default: <arch>.onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (13: every TensorRT from 8.5 on, jetson-inference)")
    add_bool_flag(parser, "dynamic-batch", False,
                  "symbolic batch dimension (jetson-inference needs the default fixed batch of 1)")
    add_bool_flag(parser, "cam", True,
                  f"a second output {CAM_NAME} with class activation maps for classify.py --heatmap (ResNets); "
                  "jetson-inference on TensorRT 10 binds only the outputs it asks for: use --no-cam --no-gate for it")
    add_bool_flag(parser, "fold-threshold", True,
                  "fold the decision threshold into output_0, so that argmax (jetson-inference's imagenet.py) decides "
                  "as the threshold does and 50%% is the operating point; --no-fold-threshold keeps output_0 as the "
                  "calibrated probabilities (the threshold then only in the metadata)")
    add_bool_flag(parser, "gate", True,
                  f"build the input gate fitted beside the checkpoint ({GATE_FILE}, train/input_gate.py) into the "
                  f"ONNX as a last output {GATE_NAME}, with its policy in the metadata")
    parser.add_argument("--no-activation", nargs="?", const="True", default=None, metavar="BOOL",
                        help="jetson-inference's flag for an ONNX that ends in logits: refused, because the decision "
                             "and the confidence drawn need the softmax probabilities")
    parser.add_argument("--verify-images", default=None, metavar="DIR",
                        help="images to verify on (default: the validation images the model was trained with)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed |probability difference| between ONNX Runtime and torch")
    _add_int8_arguments(parser.add_argument_group("INT8 (a quantized ONNX beside the FP32 one)"))
    return parser


def _add_int8_arguments(group) -> None:  # an argparse argument group
    group.add_argument("--int8", action="store_true",
                       help=f"also write <arch>{INT8_ONNX_SUFFIX}: Q/DQ nodes from ONNX Runtime's quantizer, calibrated "
                            "on real images, kept only when the accuracy guard passes; classify.py --precision int8 "
                            "and trt_build.py --precision int8 use it")
    group.add_argument("--int8-form", choices=FORMS, default="tensorrt",
                       help="tensorrt: symmetric signed INT8, for TensorRT and ARM CPUs; x86: unsigned activations, "
                            "ONNX Runtime's fast path on x86 CPUs without VNNI (TensorRT cannot build it)")
    group.add_argument("--calibration-images", default=None, metavar="DIR",
                       help="calibration images (default: the training images the model learnt from)")
    group.add_argument("--calibration-count", type=int, default=256, metavar="N", help="calibration images used")
    group.add_argument("--calibration-method", choices=METHODS, default="minmax", help="how activation ranges are set")
    group.add_argument("--max-auc-drop", type=float, default=GuardBounds.max_auc_drop,
                       help="guard: largest AUC drop allowed on validation or any shift proxy")
    group.add_argument("--max-changed", type=float, default=GuardBounds.max_changed,
                       help="guard: largest share of answers (decided class or gate status) allowed to change")
    group.add_argument("--force-int8", action="store_true", help="write the INT8 ONNX even outside the guard's bounds")


def _provenance(checkpoint: Dict[str, Any], checkpoint_path: str, options: ExportOptions) -> Dict[str, Any]:
    metrics = checkpoint.get("val_metrics") or {}
    return {"checkpoint": os.path.basename(checkpoint_path), "checkpoint_sha256": sha256_file(checkpoint_path),
            "epoch": checkpoint.get("epoch"), "best": checkpoint.get("best"),
            "val_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "torch": torch.__version__, "toolkit": f"{TOOLKIT} {TOOLKIT_VERSION}", "opset": options.opset,
            "batch": "dynamic" if options.dynamic_batch else 1,
            "exported_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _default_verify_folder(checkpoint: Dict[str, Any]) -> Optional[str]:
    data = (checkpoint.get("args") or {}).get("data")
    return os.path.join(data, "val") if data else None


def _print_contract(output: str, info: ModelInfo, options: ExportOptions, with_cam: bool) -> None:
    spec, batch = info.spec, "N" if options.dynamic_batch else 1
    print(f"=> model exported to:  {output}  ({os.path.getsize(output) / 1e6:.1f} MB, opset {options.opset}, "
          f"{'dynamic batch' if options.dynamic_batch else 'batch 1'})")
    print(f"   {INPUT_NAME} float32 [{batch},3,{spec.resolution},{spec.resolution}] -> {OUTPUT_NAME} float32 "
          f"[{batch},{len(info.labels)}] probabilities of {info.labels}"
          + (f", {CAM_NAME} class activation maps" if with_cam else ""))
    if info.graph_equalize:
        print(f"   equalises its input itself ({info.graph_equalize}, in the graph): any runtime feeding normalised RGB, "
              "jetson-inference's imagenet.py included, gives it the input it was trained on")
    elif spec.equalize != "none":
        print(f"   expects {spec.equalize}-equalised input (recorded in its metadata; classify.py and the INT8 "
              "calibrator apply it): jetson-inference's imagenet.py does not equalise, so train with "
              "--equalize hist or none for it")
    if info.gate is not None:
        print(f"   {GATE_NAME}: the input gate's scores (core/input_gate.py); classify.py answers NOT ASSESSED for what "
              "it refuses and REFER inside its band")
    if info.folded_threshold is not None:
        print(f"   threshold {info.folded_threshold:.4f} folded into {OUTPUT_NAME}: argmax decides as p >= "
              f"{info.folded_threshold:.4f}, and 50% is the operating point")


def export_onnx(options: ExportOptions) -> str:
    """Export, verify and (only when verified) write the ONNX; returns its path."""
    checkpoint_path = in_model_dir(options.model_dir, options.input)
    checkpoint = load_checkpoint(checkpoint_path)
    gate = gate_beside(checkpoint_path) if options.gate else None
    deployed = deployment(checkpoint, options.cam, _provenance(checkpoint, checkpoint_path, options),
                          options.fold_threshold, gate)
    info, wrapped, outputs = deployed.info, deployed.network, deployed.outputs
    output = in_model_dir(options.model_dir or os.path.dirname(checkpoint_path),
                          options.output or f"{checkpoint['arch']}.onnx")
    check_writable(output, "--output")  # before the export and its verification, not after
    with atomic_path(output) as temporary:
        graph = export_graph(wrapped, info.spec.resolution, temporary, options.opset, options.dynamic_batch, outputs)
        write_metadata(graph, temporary, info)
        images, described = verification_images(options.verify_images or _default_verify_folder(checkpoint),
                                                 info.spec)
        differences = verify(wrapped, temporary, images, info.spec)
        cam_text = "".join(f", {name} relative {difference:.3e}" for name, difference in zip(outputs[1:], differences[1:]))
        print(f"=> verified on {described}: max |ONNX Runtime - torch| = {differences[0]:.3e}{cam_text} "
              f"(tolerance {options.tolerance:.0e})")
        if not max(differences) <= options.tolerance:
            raise ExportError(f"ONNX Runtime and torch disagree by {max(differences):.3e} > "
                              f"{options.tolerance:.0e}; the ONNX was not written")
    _print_contract(output, info, options, CAM_NAME in outputs)
    if options.int8:
        _export_int8(output, info, checkpoint, options)
    return output


def _export_int8(fp32_path: str, info: ModelInfo, checkpoint: Dict[str, Any], options: ExportOptions) -> str:
    """Quantize, guard and (only when in bounds, or forced) write ``<arch>.int8.onnx``; returns its path."""
    data = (checkpoint.get("args") or {}).get("data")
    calibration_folder = options.calibration_images or (os.path.join(data, "train") if data else None)
    guard_folder = options.verify_images or _default_verify_folder(checkpoint)
    for folder, flag in ((calibration_folder, "--calibration-images"), (guard_folder, "--verify-images")):
        if not folder or not os.path.isdir(folder):
            raise ExportError(f"--int8 needs real images: {folder or 'no folder'} not found; pass {flag} DIR")
    output = fp32_path[:-len(".onnx")] + INT8_ONNX_SUFFIX
    check_writable(output, "the INT8 ONNX")
    calibration = calibration_images(calibration_folder, info.spec, options.calibration_count)
    print(f"=> INT8 ({options.int8_form} form, {options.calibration_method}): calibrating on "
          f"{len(calibration.images)} images from {calibration_folder}", flush=True)
    bounds = GuardBounds(options.max_auc_drop, options.max_changed)
    with atomic_path(output) as temporary:
        record = quantize(fp32_path, temporary, calibration, info.spec, options.int8_form, options.calibration_method)
        report = guard(fp32_path, temporary, guard_folder, info, bounds)
        print(report.table())
        failures = report.failures()
        if failures and not options.force_int8:
            raise ExportError(f"INT8 outside the guard's bounds ({'; '.join(failures)}): {output} not written; "
                              "calibrate on more and varied images, or --force-int8 to write it anyway")
        write_record(temporary, {**record, "guard": report.record()})
    verdict = "inside" if not failures else "OUTSIDE (written because of --force-int8)"
    print(f"=> INT8 model written to: {output} ({os.path.getsize(output) / 1e6:.1f} MB), {verdict} the guard's "
          f"bounds (AUC drop <= {bounds.max_auc_drop}, answers changed <= {bounds.max_changed:.1%})")
    return output


def main(args: argparse.Namespace) -> int:
    if args.no_activation is not None:
        raise ExportError("--no-activation: this toolkit's ONNX always ends in softmax: classify.py, imagenet.py and "
                          "the threshold folded into output_0 need probabilities; leave the flag out")
    export_onnx(ExportOptions.from_args(args))
    return 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "onnx_export.py")
