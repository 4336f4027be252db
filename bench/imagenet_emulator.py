"""jetson-inference's imagenet.py, emulated on ONNX Runtime: how it turns an image file into output_0
and a class, so a model's decisions there can be compared with classify.py's without a Jetson.

What imagenet.py does (read in jetson-inference @45da40a and jetson-utils @fae4b42 for this project):
- ``loadImage`` decodes with stb_image into 3-channel RGB (rgb8): a grey image is replicated, alpha is
  dropped, 16 bits are cut to 8 (the high byte). Here OpenCV's decoder does the same (IMREAD_COLOR);
  stb's own JPEG decoder differs from libjpeg by up to 3 levels on colour JPEGs, by at most 1 on grey ones.
- ``cudaTensorNormMeanRGB``: the whole frame to the network's W x H by nearest point sampling, computed
  in float32 as ``dx = int(float(x) * (float(in_w) / float(out_w)))`` (no half-pixel offset, no aspect
  kept, no crop), then ``(px * (1/255) - mean) / std`` per RGB channel, planar, float32;
- ``imageNet::Classify`` (imagenet.py asks for topK=1): no softmax of its own; among the classes whose
  output is at least ``--threshold`` (default 0.01) and above 0, the highest, ties going to the lower
  index; none: class -1.
"""
from __future__ import annotations

import argparse
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ImageDecodeError
from cxr_jetson.core.labels import read_labels
from cxr_jetson.core.names import OUTPUT_NAME

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_THRESHOLD = 0.01


def load_rgb8(path: str) -> np.ndarray:
    """An image file as jetson_utils.loadImage gives it: H x W x 3 uint8 RGB."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(f"{path} is not an image imagenet.py can load")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def point_sample_indices(size_in: int, size_out: int) -> np.ndarray:
    """jetson-utils' source index for each output index, in float32 as the CUDA kernel computes it."""
    scale = np.float32(size_in) / np.float32(size_out)
    return (np.arange(size_out, dtype=np.float32) * scale).astype(np.int64)


def network_input(rgb: np.ndarray, width: int, height: int, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """H x W x 3 uint8 RGB -> float32 ``1 x 3 x height x width``, as cudaTensorNormMeanRGB makes it."""
    rows = point_sample_indices(rgb.shape[0], height)
    columns = point_sample_indices(rgb.shape[1], width)
    sampled = rgb[rows[:, None], columns[None, :]].astype(np.float32)
    scaled = sampled * np.float32(1.0 / 255.0)
    planes = [(scaled[:, :, c] - np.float32(mean[c])) / np.float32(std[c]) for c in range(3)]
    return np.ascontiguousarray(np.stack(planes)[None], dtype=np.float32)


def top_class(output: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Tuple[int, float]:
    """imageNet's topK=1 answer for one row of output_0: (class, confidence), or (-1, 0.0)."""
    best, confidence = -1, 0.0
    for index, value in enumerate(output.astype(np.float32)):
        if value >= threshold and value > confidence:  # strict: a tie keeps the lower index
            best, confidence = index, float(value)
    return best, confidence


class ImageNetEmulator:
    """An ONNX as imagenet.py --model=X.onnx --input_blob=input_0 --output_blob=output_0 runs it."""

    def __init__(self, onnx_path: str, labels: str, threshold: float = DEFAULT_THRESHOLD) -> None:
        import onnxruntime
        self.session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        _, _, self.height, self.width = self.input.shape
        self.labels: List[str] = read_labels(labels)
        self.threshold = threshold

    def output(self, path: str) -> np.ndarray:
        rgb = load_rgb8(path)
        return self.session.run([OUTPUT_NAME], {self.input.name: network_input(rgb, self.width, self.height)})[0][0]

    def classify(self, path: str) -> Tuple[int, float]:
        return top_class(self.output(path), self.threshold)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Classify image files as jetson-inference's imagenet.py would.")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", required=True, help="the .onnx")
    parser.add_argument("--labels", required=True, help="labels.txt")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="imagenet.py's display filter")
    return parser


def main(args: argparse.Namespace) -> int:
    emulator = ImageNetEmulator(args.model, args.labels, args.threshold)
    for path in args.images:
        index, confidence = emulator.classify(path)
        label = emulator.labels[index] if index >= 0 else "none"
        print(f"imagenet:  {confidence * 100:05.2f}% class #{index} ({label})  {path}")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.imagenet_emulator")
