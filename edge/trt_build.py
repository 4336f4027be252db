"""trt_build.py: ONNX -> TensorRT engine, FP16 by default, cached beside the ONNX with a sidecar.

    python3 trt_build.py --model-dir models/pneumonia                 # on the Jetson
    python3 trt_build.py --onnx models/pneumonia/resnet18.onnx --precision fp32
    python3 trt_build.py --model-dir models/pneumonia --precision int8   # from resnet18.int8.onnx

INT8 builds the quantized ONNX that ``onnx_export.py --int8`` writes beside the FP32 one (calibrated on
real images there). The builder itself is edge/tensorrt/builder.py; this is its command line.
"""
from __future__ import annotations

import argparse

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.model_files import default_model_path
from cxr_jetson.core.names import PRECISIONS
from cxr_jetson.edge.tensorrt.api import load_tensorrt
from cxr_jetson.edge.tensorrt.builder import LOG_LEVELS, BuildOptions, ensure_engine, onnx_for
from cxr_jetson.edge.tensorrt.cuda import current_gpu
from cxr_jetson.edge.tensorrt.engine_record import engine_path_for, stale_reasons


class _RemovedFlag(argparse.Action):
    """An implicit-calibration flag of earlier versions: a one-line pointer to where INT8 is calibrated now."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} is gone: INT8 engines are built from a quantized ONNX, calibrated on real "
                     "images when it is made (python3 onnx_export.py --model-dir DIR --int8), then "
                     "trt_build.py --precision int8")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Build a TensorRT engine from this toolkit's ONNX (FP16 by default).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model-dir", default=default_model_path(), help="folder holding the .onnx")
    parser.add_argument("--onnx", default=None, help="ONNX file (instead of --model-dir)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16",
                        help="engine precision; int8 builds <arch>.int8.onnx (onnx_export.py --int8)")
    parser.add_argument("--max-batch", type=int, default=1, help="largest batch (needs a --dynamic-batch export above 1)")
    parser.add_argument("--workspace", type=int, default=None, metavar="MIB",
                        help="builder workspace limit in MiB (default: TensorRT's)")
    parser.add_argument("--tactic-shared-memory", type=int, default=None, metavar="KIB",
                        help="limit on the shared memory tactics may use, in KiB (default: TensorRT's)")
    parser.add_argument("--timing-cache", default=None, help="timing cache file, reused across builds "
                                                             "(default: ~/.cache/cxr-jetson/<tensorrt>-<gpu>.timingcache)")
    parser.add_argument("--compute-capability", default="", metavar="SM86[,SM89]",
                        help="TensorRT-RTX only: target GPUs when building on a machine without one")
    parser.add_argument("--calibration-images", "--calibration-count", action=_RemovedFlag, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="TensorRT build log verbosity")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached engine still matches")
    parser.add_argument("--check", action="store_true",
                        help="only report whether the cached engine can be used (exit 1 when it cannot)")
    return parser


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    return BuildOptions(precision=args.precision, max_batch=args.max_batch, workspace_mib=args.workspace,
                        tactic_shared_kib=args.tactic_shared_memory, timing_cache=args.timing_cache,
                        compute_capabilities=tuple(c for c in args.compute_capability.split(",") if c),
                        log_level=args.log_level)


def main(args: argparse.Namespace) -> int:
    onnx_path = onnx_for(args.onnx or args.model_dir, args.precision)
    trt = load_tensorrt()
    options = options_from_args(args)
    if args.check:
        engine_path = engine_path_for(onnx_path, options.precision, options.max_batch)
        reasons = stale_reasons(engine_path, onnx_path, trt.flavor, trt.version, current_gpu())
        print(f"{engine_path}: " + ("up to date" if not reasons else "; ".join(reasons)))
        return 1 if reasons else 0
    ensure_engine(onnx_path, options, build=True, force=args.force, trt=trt)
    return 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "trt_build.py")
