#!/usr/bin/env python3
"""Write pip constraints that keep what a base image ships, so installing the project adds packages
and never replaces them.

Why constraints: on an L4T/NGC PyTorch base, torch and torchvision are CUDA builds made by NVIDIA.
Left alone, pip may "upgrade" them to PyPI wheels (CPU-only on aarch64) to satisfy a requirement,
and the image silently loses its GPU. Pinning the installed versions makes pip keep them or fail the
build with the conflict named. The other pins protect what those builds were compiled against:
- numpy 1.x (NumPy 2 cannot load modules built for 1.x: torch, OpenCV, TensorRT's bindings), and
  below 1.24 with CUDA 11 (JetPack 5): TensorRT 8.5's tensorrt.nptype uses np.bool, which numpy 1.24
  removed (NVIDIA/TensorRT#2557, fixed in 8.6; no JetPack 5 has 8.6);
- cuda-python of the base's CUDA major.minor: from 12.9 cuda-python links the CUDA 12.9 runtime,
  which needs a 12.9 driver, and a Jetson has no minor-version compatibility without cuda-compat
  (cuda-python<13 resolved to 12.9 on JetPack 6.1's CUDA 12.6 and CUDA never initialised;
  jetson-containers pins cuda-python to the CUDA major.minor for this reason).

usage: pin_base_packages.py [--torch] [--cuda-version X.Y] > constraints.txt
  --torch           require CUDA builds of torch and torchvision and pin them (the full images)
  --cuda-version    the CUDA version (11.4 on JetPack 5, 12.6 on JetPack 6.1/6.2) when the base does
                    not say (no $CUDA_VERSION and no /usr/local/cuda/version.json)
Runs on the Python of the image or the Jetson (3.8 on JetPack 5): standard library only.
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


def cuda_version(given):
    """(major, minor) of the CUDA the base (or the Jetson) has."""
    version = given or os.environ.get("CUDA_VERSION", "")
    if not version and os.path.exists(CUDA_VERSION_JSON):
        with open(CUDA_VERSION_JSON) as file:
            version = json.load(file)["cuda"]["version"]
    parts = version.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise PinError("cannot tell the base image's CUDA version: pass --build-arg CUDA_RELEASE=X.Y "
                       "(--cuda-version X.Y), e.g. 11.4 on JetPack 5, 12.6 on JetPack 6.1/6.2")
    return int(parts[0]), int(parts[1])


def cuda_python_pin(major, minor):
    if major == 11:
        # No cuda-python 11.4 exists on PyPI. Before 12.9, cuda-python implements the runtime on top of the
        # driver API, so its 11.x releases run on a CUDA 11.4 driver; 11.8.2 is the last with Python 3.8 wheels
        # for aarch64 (jetson-containers ran 11.7 on L4T R35).
        return "cuda-python>=11.5,<11.9"
    return f"cuda-python>={major}.{minor},<{major}.{minor + 1}"


def constraints(torch, given_cuda_version):
    major, minor = cuda_version(given_cuda_version)
    lines = cuda_torch_pins() if torch else []
    lines += [f"{name}=={installed(name)}" for name in KEEP_IF_PRESENT if installed(name)]
    lines.append("numpy<1.24" if major == 11 else "numpy<2")
    lines.append(cuda_python_pin(major, minor))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description="pip constraints that keep the base image's packages")
    parser.add_argument("--torch", action="store_true", help="require and pin CUDA torch and torchvision")
    parser.add_argument("--cuda-version", default="", help="CUDA version X.Y when the base does not say")
    args = parser.parse_args(argv)
    try:
        lines = constraints(args.torch, args.cuda_version)
    except PinError as error:
        print(f"pin_base_packages.py: {error}", file=sys.stderr)
        return 1
    print("# pip constraints written by docker/pin_base_packages.py: keep the base image's builds")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
