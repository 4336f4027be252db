#!/usr/bin/env python3
"""Fail an image build that would not run: the last step of every Dockerfile here.

Checks what can be checked while building, without a GPU or its driver: the modules the device path
and the engine builder need are importable or present, OpenCV has GStreamer where cameras need it,
a full image's torch is a CUDA build, and the device path still imports without torch. Running an
engine needs the Jetson: see "Check the images on a Jetson" in docs/deploy-jetson.md.

usage: check_image.py [--full] [--gstreamer] [--onnx-parser N]
  --full           also torch (CUDA build), torchvision, onnx and ONNX Runtime: train and export
  --gstreamer      OpenCV must be built with GStreamer (csi:// cameras, on a Jetson)
  --onnx-parser N  TensorRT's ONNX parser library, libnvonnxparser.so.N, must be installed (8 on
                   JetPack 5, 10 on JetPack 6): engines are built on the device from the ONNX
Runs on the Python of the image (3.8 on JetPack 5): standard library and the project only.
"""
import argparse
import glob
import importlib.util
import os
import re
import subprocess
import sys

LIBRARY_FOLDERS = ("/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/cuda/lib64", "/usr/lib")


def present(module):
    """Found without importing: TensorRT and CUDA bindings load the GPU driver, which a build lacks."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def library_present(name):
    """A shared library is installed where the dynamic linker finds it (ldconfig's cache, or the usual folders)."""
    try:
        # ldconfig is wherever the image's PATH has it (/sbin on some, /usr/sbin on others)
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout  # noqa: S607
    except OSError:
        cache = ""
    return name in cache or any(glob.glob(os.path.join(folder, name + "*")) for folder in LIBRARY_FOLDERS)


def problems(full, gstreamer, onnx_parser=""):
    found = []
    if onnx_parser and not library_present(f"libnvonnxparser.so.{onnx_parser}"):
        found.append(f"no TensorRT ONNX parser (libnvonnxparser.so.{onnx_parser}; "
                     f"apt-get install libnvonnxparsers{onnx_parser})")
    try:
        import cv2
    except ImportError as error:
        return [f"OpenCV does not import: {error}"]
    if gstreamer and not re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()):
        found.append(f"OpenCV {cv2.__version__} ({cv2.__file__}) is built without GStreamer")
    if not present("tensorrt"):
        found.append("no TensorRT Python module (tensorrt)")
    if not (present("cuda.bindings") or present("cuda.cudart")):
        found.append("no cuda-python (cuda.bindings or cuda.cudart)")
    try:
        import cxr_jetson.edge.classify  # noqa: F401  (the device path: numpy, OpenCV, tqdm)
    except ImportError as error:
        found.append(f"the device path (cxr_jetson.edge.classify) does not import: {error}")
    if "torch" in sys.modules:
        found.append("the device path (cxr_jetson.edge.classify) imports torch")
    if full:
        spec = importlib.util.find_spec("torch")
        if spec is None:
            found.append("no torch")
        elif not os.path.exists(os.path.join(os.path.dirname(spec.origin), "lib", "libtorch_cuda.so")):
            found.append("torch is a CPU build")
        found += [f"no {name}" for name in ("torchvision", "onnx", "onnxruntime") if not present(name)]
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description="check a built image before it is kept")
    parser.add_argument("--full", action="store_true", help="also the training and export stack")
    parser.add_argument("--gstreamer", action="store_true", help="OpenCV must have GStreamer")
    parser.add_argument("--onnx-parser", default="", metavar="N", help="libnvonnxparser.so.N must be installed")
    args = parser.parse_args(argv)
    found = problems(args.full, args.gstreamer, args.onnx_parser)
    for problem in found:
        print(f"check_image.py: {problem}", file=sys.stderr)
    if not found:
        print("check_image.py: image OK (" + ("full" if args.full else "runtime") + ")")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
