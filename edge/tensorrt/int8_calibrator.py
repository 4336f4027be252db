"""INT8 calibration with real X-rays, through the same preprocessing the device uses.

jetson-inference calibrates INT8 with random data when no calibrator is given, which silently
produces a bad engine; here INT8 needs a folder of real images or an existing calibration cache.
One ``ImageBatcher`` feeds the calibrator, so calibration sees exactly what inference sees.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Tuple

import numpy as np

from cxr_jetson.core.errors import ImageDecodeError, ToolkitError
from cxr_jetson.core.files import atomic_path
from cxr_jetson.core.image_files import expand_input
from cxr_jetson.core.preprocess import PreprocessSpec, load_for_network, normalize


class CalibrationError(ToolkitError):
    """INT8 requested without the images or cache it needs."""


class ImageBatcher:
    """float32 ``N x 3 x R x R`` batches of real images from a folder, skipping unreadable files."""

    def __init__(self, folder: str, spec: PreprocessSpec, batch_size: int, max_images: int) -> None:
        images, _ = expand_input(folder)
        self.paths: List[str] = [image.path for image in images][:max_images]
        self.spec = spec
        self.batch_size = batch_size
        if len(self.paths) < batch_size:
            raise CalibrationError(f"{folder} has {len(self.paths)} images; calibration needs at least one batch "
                                   f"of {batch_size}")

    def __iter__(self) -> Iterator[np.ndarray]:
        batch = []
        for path in self.paths:
            try:
                batch.append(load_for_network(path, self.spec))
            except ImageDecodeError as err:
                print(f"calibration: skipped {err}")
                continue
            if len(batch) == self.batch_size:
                yield normalize(np.stack(batch), self.spec)
                batch = []


def entropy_calibrator(trt_module, batcher: Optional[ImageBatcher], cache_path: str, cuda,
                       input_shape: Tuple[int, int, int, int]):
    """A ``trt.IInt8EntropyCalibrator2`` that reads ``cache_path`` first and can run from it alone.

    An explicit-batch network is calibrated at its full input shape (its fixed batch, or the
    calibration profile's optimum), whatever ``get_batch_size`` says, so every batch has exactly
    ``input_shape`` and the device buffer is sized for it.
    """
    if batcher is not None and batcher.batch_size != input_shape[0]:
        raise CalibrationError(f"calibration batches of {batcher.batch_size} for a network calibrated at batch "
                               f"{input_shape[0]}")
    if batcher is None and not os.path.isfile(cache_path):
        raise CalibrationError("INT8 needs real calibration images (--calibration-images DIR) or an existing "
                               f"calibration cache ({cache_path}); random calibration gives a wrong engine")

    class EntropyCalibrator(trt_module.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt_module.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batcher) if batcher is not None else iter(())
            self.host = cuda.pinned_array(tuple(input_shape), np.float32)
            self.device = cuda.device_buffer(self.host.nbytes)
            self.seen = 0

        def get_batch_size(self) -> int:
            return self.host.shape[0]

        def get_batch(self, names):  # noqa: ARG002 (TensorRT passes the input names)
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.host[...] = batch
            cuda.to_device(self.device, self.host)
            cuda.synchronize()
            self.seen += len(batch)
            print(f"calibration: {self.seen} images", end="\r", flush=True)
            return [self.device]

        def read_calibration_cache(self):
            if os.path.isfile(cache_path):
                with open(cache_path, "rb") as handle:
                    return handle.read()
            return None

        def write_calibration_cache(self, cache) -> None:
            with atomic_path(cache_path) as temporary, open(temporary, "wb") as handle:
                handle.write(bytes(cache))

    return EntropyCalibrator()
