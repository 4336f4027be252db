"""classify.py: classify chest X-rays from files, folders, video, cameras or streams, and draw the result.

    python3 classify.py INPUT [OUTPUT] [--model models/pneumonia] [--threshold T] [--topK K] [--heatmap]

INPUT: an image file (DICOM included), a folder (walked recursively), a quoted glob, a video file,
/dev/videoN or v4l2:///dev/videoN, csi://N, rtsp://...  OUTPUT: an image file, a folder that
mirrors the input layout, a pattern like out_%04d.jpg, a video file (.mp4/.avi), display://0, or
http://@:PORT for a live web view. A bad file or frame is reported and skipped; the rest go on.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from cxr_jetson.core.cli import EXIT_INTERRUPTED, add_bool_flag, run_cli
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import check_writable
from cxr_jetson.core.image_files import special_file_kind
from cxr_jetson.core.image_header import DEFAULT_MAX_PIXELS, set_max_pixels
from cxr_jetson.core.input_gate import STATUS_DECIDED, STATUS_NOT_ASSESSED, STATUS_REFER
from cxr_jetson.core.model_files import default_model_path
from cxr_jetson.core.names import PRECISIONS
from cxr_jetson.edge.backends import BACKEND_CHOICES, BackendOptions
from cxr_jetson.edge.deployed_model import DeployedModel
from cxr_jetson.edge.pipeline import Outcome, RunOptions, result_fields, run_pipeline
from cxr_jetson.edge.results import ResultsWriter
from cxr_jetson.edge.sinks import FolderSink, Sink, open_sink, output_folder
from cxr_jetson.edge.sources import open_source
from cxr_jetson.edge.timing import StageClock
from cxr_jetson.edge.video_source import CODECS, DECODERS, CaptureOptions
from cxr_jetson.edge.web_view import TOKEN_AUTO

EXIT_SOME_FAILED = 1


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Classify chest X-rays with an exported model and draw class and confidence on each.")
    parser.add_argument("input", help="image, DICOM, folder, quoted glob, video, /dev/videoN, csi://N or rtsp://...")
    parser.add_argument("output", nargs="?", default=None,
                        help="image file, folder, out_%%04d.jpg, video .mp4/.avi, display://0 or http://@:PORT "
                             "(none: no images written)")
    parser.add_argument("--model", "--network", dest="model", default=default_model_path(),
                        help="model folder, .onnx or .engine (default: $NET, else models/pneumonia)")
    parser.add_argument("--input-blob", "--input_blob", dest="input_blob", default=None,
                        help="jetson-inference's name of the input tensor: accepted, and checked against the model's "
                             "(input_0)")
    parser.add_argument("--output-blob", "--output_blob", dest="output_blob", default=None,
                        help="jetson-inference's name of the output tensor: accepted, and checked against the model's "
                             "(output_0)")
    parser.add_argument("--labels", default=None,
                        help="labels file, one class per line (default: the labels embedded in the model); they "
                             "must be the model's own, by name and order, unless --relabel")
    parser.add_argument("--relabel", action="store_true",
                        help="accept --labels that differ from the model's own: their names replace the model's, "
                             "in the model's class order (the decision stays the model's)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="the largest image decoded, width x height; a larger header is refused before "
                             "decoding (a decompression bomb or a lying file)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decision threshold on the positive class probability "
                             "(default: the one chosen on validation data at training time)")
    parser.add_argument("--topK", "--top-k", dest="top_k", type=int, default=1,
                        help="classes to list on the image and console (default 1)")
    parser.add_argument("--heatmap", action="store_true",
                        help="blend the class activation map (where the model saw the evidence) onto each image")
    parser.add_argument("--no-gate", dest="gate", action="store_false",
                        help="answer every input: turn off the input gate (NOT ASSESSED for what the model was not made "
                             "for, REFER near the threshold) of a model exported with one")
    parser.add_argument("--profile", action="store_true", help="print a per-stage timing report at the end")
    parser.add_argument("--output-size", choices=("full", "decoded"), default="full",
                        help="annotated images at the input's full resolution (default), or at the resolution "
                             "the network's input was decoded at: the same for a model that decodes in full "
                             "(the default now); for an earlier model that decodes large JPEGs reduced (to at "
                             "least twice the network size), saves a second decode and most of the encoding")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                        help="auto (default): TensorRT when installed with a GPU present, else ONNX Runtime")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="TensorRT engine / torch precision (default: fp16 on a GPU); ONNX Runtime runs the fp32 "
                             "ONNX, or with int8 its quantized copy (onnx_export.py --int8)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per inference call for folders and video files (default 1; above 1 needs "
                             "a --dynamic-batch export)")
    add_bool_flag(parser, "build", True, "build the TensorRT engine when none matches the model; "
                                         "--no-build refuses to run instead")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for inference (0: back-end default)")
    parser.add_argument("--workers", type=int, default=2,
                        help="threads that decode and preprocess images ahead of inference (default 2)")
    parser.add_argument("--results", default=None,
                        help="results file (.csv or .jsonl), written as it goes "
                             "(default: OUTPUT/results.csv when OUTPUT is a folder)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-image console lines")
    video = parser.add_argument_group("video and camera input")
    video.add_argument("--input-width", type=int, default=0, help="capture width (cameras)")
    video.add_argument("--input-height", type=int, default=0, help="capture height (cameras)")
    video.add_argument("--input-rate", type=float, default=0, help="capture frame rate (cameras)")
    video.add_argument("--input-loop", type=int, default=0, help="play a video file N more times (-1: forever)")
    video.add_argument("--input-retries", type=int, default=5,
                       help="reconnection attempts when a camera or stream stops (back-off 0.5 s, 1 s, 2 s, ...)")
    video.add_argument("--input-flip", default="none",
                       choices=("none", "counterclockwise", "rotate-180", "clockwise", "horizontal", "vertical"),
                       help="CSI camera orientation")
    video.add_argument("--input-codec", default="", choices=("",) + CODECS, metavar="CODEC",
                       help=f"how a stream or camera is compressed: {', '.join(CODECS)} (default: h264 for RTSP, "
                            "mjpeg requested from V4L2 cameras)")
    video.add_argument("--input-decoder", default="auto", choices=DECODERS,
                       help="RTSP decoding with GStreamer: v4l2 (the Jetson's hardware decoder), cpu; auto: v4l2 on "
                            "a Jetson")
    video.add_argument("--input-latency", type=int, default=200, help="RTSP jitter buffer in ms")
    video.add_argument("--output-rate", type=float, default=0, help="frame rate of a video OUTPUT (default: the input's)")
    video.add_argument("--web-token", default=TOKEN_AUTO, metavar="auto|none|TOKEN",
                       help="the web view's access token: auto (a new one, required unless it listens on loopback "
                            "only), none (no token: anyone who reaches the port sees the images), or your own")
    video.add_argument("--web-linger", type=float, default=-1,
                       help="after the input ends, keep the web view up this many seconds (-1: until Ctrl+C)")
    return parser


def _results_path(args: argparse.Namespace, sink) -> Optional[str]:
    if args.results:
        return args.results
    if isinstance(sink, FolderSink):
        return os.path.join(sink.folder, "results.csv")
    return None


def _print_summary(outcome: Outcome, source, model: DeployedModel, clock: StageClock, profile: bool,
                   results: Optional[str]) -> None:
    counts: List[str] = [f"classified {outcome.done} {'frame' if source.fps else 'image'}(s)"]
    if outcome.failures:
        counts.append(f"{len(outcome.failures)} failed")
    if source.skipped:
        counts.append(f"{len(source.skipped)} file(s) passed over (not images, or not regular files)")
    if source.corrupt:
        counts.append(f"{source.corrupt} corrupt frame(s) skipped")
    if source.reconnects:
        counts.append(f"{source.reconnects} reconnection(s)")
    print(("\nstopped by Ctrl+C; " if outcome.interrupted else "\n") + ", ".join(counts))
    rule = model.rule
    decided = outcome.statuses.get(STATUS_DECIDED, 0)
    if model.gate is not None and outcome.done:
        print(f"  input gate: {decided} decided, {outcome.statuses.get(STATUS_REFER, 0)} REFER, "
              f"{outcome.statuses.get(STATUS_NOT_ASSESSED, 0)} NOT ASSESSED")
    if rule.positive is not None and decided:
        print(f"  {rule.labels[rule.positive]}: {outcome.positives} of {decided} decided at threshold "
              f"{rule.threshold:.4f}")
    if outcome.done:
        print("  mean ms per image: " + "  ".join(f"{stage} {clock.mean(stage):.2f}" for stage in clock.totals))
    for failure in outcome.failures:
        print(f"  failed: {failure}", file=sys.stderr)
    for path in source.skipped:
        kind = special_file_kind(path)
        if kind is not None:  # named like an image but not a file that can be read to its end
            print(f"  skipped: {path} is {kind}, not a regular file: not read", file=sys.stderr)
    if profile:
        print("\n" + "\n".join(clock.report()))
    if results:
        print(f"  results: {results}")


def _check_blobs(args: argparse.Namespace, model: DeployedModel) -> None:
    """jetson-inference's --input_blob/--output_blob must name the model's own tensors."""
    for flag, given, actual, kind in (("--input_blob", args.input_blob, model.backend.input_name, "input"),
                                      ("--output_blob", args.output_blob, model.backend.output_name, "output")):
        if given is not None and given != actual:
            raise ToolkitError(f"{flag}={given}: {os.path.basename(model.model_file)} has no {kind} named {given}; "
                               f"its {kind} is {actual}")


def _input_paths(source) -> frozenset:
    """The real paths of the input files: what no output may replace."""
    return frozenset(os.path.realpath(path) for path in source.files())


def _refuse_writing_over_inputs(source, inputs: frozenset, sink: Sink, results_path: Optional[str]) -> None:
    """No output may replace an input (``inputs``: their real paths): refused before any work, in one line."""
    planned = sink.planned(source.names()) + ([results_path] if results_path else [])
    clash = [path for path in planned if os.path.realpath(path) in inputs]
    if clash:
        raise ToolkitError(f"the output would write over the input {clash[0]}"
                           + (f" and {len(clash) - 1} more" if len(clash) > 1 else "")
                           + "; name another output folder or file")


def main(args: argparse.Namespace) -> int:
    if args.top_k < 1 or args.batch_size < 1 or args.workers < 1 or args.max_pixels < 1:
        raise ToolkitError("--topK, --batch-size, --workers and --max-pixels must be at least 1")
    set_max_pixels(args.max_pixels)
    capture = CaptureOptions(args.input_width, args.input_height, args.input_rate, args.input_loop,
                             args.input_retries, args.input_flip, args.input_codec, args.input_decoder,
                             args.input_latency)
    # The output folder is never read, so a run never reads back what it (or an earlier one) wrote.
    source = open_source(args.input, capture, exclude=output_folder(args.output))
    try:
        single = not source.fps and source.frame_count == 1
        inputs = _input_paths(source)
        sink = open_sink(args.output, single, args.output_rate or source.fps, args.web_linger, inputs, args.web_token)
        try:
            results_path = _results_path(args, sink)
            _refuse_writing_over_inputs(source, inputs, sink, results_path)
            if results_path:
                check_writable(results_path, "results file")
            options = BackendOptions(args.precision, args.threads, args.batch_size, args.build)
            model = DeployedModel(args.model, args.backend, args.labels, args.threshold, options, args.relabel,
                                  args.gate)
            _check_blobs(args, model)
            if args.heatmap and not model.backend.has_cam:
                raise ToolkitError(f"{os.path.basename(model.model_file)} has no class activation map output; "
                                   "re-export it with onnx_export.py (--cam is the default for ResNets)")
        except BaseException:
            sink.close()
            raise
        results = ResultsWriter(results_path, result_fields(model.labels, model.gate is not None))
        print(f"model: {model.describe()}\ninput: {source.description}\noutput: {sink.description}", flush=True)
        try:
            options = RunOptions(args.batch_size, args.top_k, args.heatmap, args.workers, args.quiet,
                                 full_resolution=args.output_size == "full")
            outcome, clock = run_pipeline(source, model, sink, results, options)
            if not outcome.interrupted:
                try:
                    sink.finish()
                except KeyboardInterrupt:  # the usual way to leave a lingering web view
                    pass
        finally:
            results.close()
            sink.close()
            model.backend.close()
    finally:
        source.close()
    _print_summary(outcome, source, model, clock, args.profile, results_path)
    if outcome.interrupted:
        return EXIT_INTERRUPTED  # as a shell reports Ctrl+C; everything classified so far is kept
    return EXIT_SOME_FAILED if outcome.failures else 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "classify.py")
