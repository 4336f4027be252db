#!/usr/bin/env python3
"""Write pip constraints that keep what a base image ships, so installing the project adds packages
and never replaces them.

Why constraints: on an L4T/NGC PyTorch base, torch and torchvision are CUDA builds made by NVIDIA.
Left alone, pip may "upgrade" them to PyPI wheels (CPU-only on aarch64) to satisfy a requirement,
and the image silently loses its GPU. Pinning the installed versions makes pip keep them or fail the
build with the conflict named. The other pins protect what those builds were compiled against:
numpy 1.x (NumPy 2 cannot load modules built for 1.x: torch, OpenCV, TensorRT's bindings) and
cuda-python of the base's CUDA major version (cuda-python 13 needs a CUDA 13 driver).

usage: pin_base_packages.py [--torch] [--cuda-major N] > constraints.txt
  --torch         require CUDA builds of torch and torchvision and pin them (the full images)
  --cuda-major N  the CUDA major version when the base does not say (no $CUDA_VERSION and no
                  /usr/local/cuda/version.json)
Runs on the Python of the image (3.8 on JetPack 5): standard library only.
"""
import argparse
import importlib.util
import json
import os
import sys
from importlib import metadata

# Kept at their installed versions when present: NVIDIA builds matched to the base's CUDA.
KEEP_IF_PRESENT = ("cuda-python", "cuda-bindings", "tensorrt")
CUDA_VERSION_JSON = "/usr/local/cuda/version.json"


class PinError(Exception):
    pass


def installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cuda_torch_pins():
    """torch and torchvision pinned; an error unless torch is a CUDA build (found without importing it,
    which needs no GPU driver at build time)."""
    torch, vision = installed("torch"), installed("torchvision")
    if torch is None or vision is None:
        raise PinError("the base image has no torch and torchvision; a full image needs an NVIDIA PyTorch base")
    spec = importlib.util.find_spec("torch")
    cuda_lib = os.path.join(os.path.dirname(spec.origin), "lib", "libtorch_cuda.so")
    if not os.path.exists(cuda_lib):
        raise PinError(f"torch {torch} in the base image is a CPU build (no {cuda_lib})")
    return ["torch==" + torch, "torchvision==" + vision]


def cuda_major(given):
    if given:
        return int(given)
    version = os.environ.get("CUDA_VERSION", "")
    if not version and os.path.exists(CUDA_VERSION_JSON):
        with open(CUDA_VERSION_JSON) as file:
            version = json.load(file)["cuda"]["version"]
    if not version:
        raise PinError("cannot tell the base image's CUDA version: pass --build-arg CUDA_MAJOR=N")
    return int(version.split(".")[0])


def constraints(torch, given_cuda_major):
    lines = cuda_torch_pins() if torch else []
    lines += [f"{name}=={installed(name)}" for name in KEEP_IF_PRESENT if installed(name)]
    lines.append("numpy<2")
    lines.append(f"cuda-python<{cuda_major(given_cuda_major) + 1}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description="pip constraints that keep the base image's packages")
    parser.add_argument("--torch", action="store_true", help="require and pin CUDA torch and torchvision")
    parser.add_argument("--cuda-major", default="", help="CUDA major version when the base does not say")
    args = parser.parse_args(argv)
    try:
        lines = constraints(args.torch, args.cuda_major)
    except PinError as error:
        print(f"pin_base_packages.py: {error}", file=sys.stderr)
        return 1
    print("# pip constraints written by docker/pin_base_packages.py: keep the base image's builds")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
