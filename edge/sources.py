"""The runner's INPUT: image files (a file, a folder, a quoted glob; DICOM included) or a video source.

Both kinds give the pipeline the same two things: ``jobs()``, cheap descriptions of what comes next
in order, and ``load(job, spec)``, the decode + preprocess work that runs in worker threads.
"""
from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from typing import Iterator, List, Tuple

from edge.cli import ToolkitError
from edge.decode import decode_grey, is_dicom, read_bytes, to_grey
from edge.frames import Frame
from edge.preprocess import PreprocessSpec, resize_to_network
from edge.video_source import STREAM_SCHEMES, CaptureOptions, VideoSource, is_video_uri

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".pgm", ".ppm", ".pbm", ".jp2", ".dcm"})


KNOWN_SCHEMES = ("file://", "csi://", "v4l2://") + STREAM_SCHEMES


class SourceError(ToolkitError, ValueError):
    """An INPUT that names nothing usable."""


@dataclass(frozen=True)
class InputImage:
    path: str
    relpath: str  # where its annotated copy goes inside an output folder


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _is_dicom_without_extension(path: str) -> bool:
    if os.path.splitext(path)[1]:
        return False
    try:
        with open(path, "rb") as handle:
            return is_dicom(handle.read(132))
    except OSError:
        return False


def _has_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _walk_folder(folder: str) -> Tuple[List[InputImage], List[str]]:
    images, skipped = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            if is_image_name(name) or _is_dicom_without_extension(path):
                images.append(InputImage(path, os.path.relpath(path, folder)))
            else:
                skipped.append(path)
    return images, skipped


def expand_input(spec: str) -> Tuple[List[InputImage], List[str]]:
    """Images named by ``spec`` in a stable order, and the non-image files passed over.

    A single file is taken whatever its name (so a mislabelled file gets a clear decode error);
    folders are walked recursively and keep their layout in the output folder.
    """
    if os.path.isdir(spec):
        images, skipped = _walk_folder(spec)
    elif os.path.isfile(spec):
        images, skipped = [InputImage(spec, os.path.basename(spec))], []
    elif _has_glob(spec):
        matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in matches]) if matches else ""
        images = [InputImage(p, os.path.relpath(os.path.abspath(p), base)) for p in matches if is_image_name(p)]
        skipped = [p for p in matches if not is_image_name(p)]
    else:
        raise SourceError(f"input {spec} does not exist")
    if not images:
        raise SourceError(f"input {spec} contains no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images, skipped


class ImageFileSource:
    live = False

    def __init__(self, spec: str) -> None:
        self.images, self.skipped = expand_input(spec)
        self.frame_count = len(self.images)
        self.description = f"{len(self.images)} image(s) from {spec}"
        self.fps = 0.0
        self.corrupt = self.reconnects = 0

    def jobs(self) -> Iterator[Tuple[int, InputImage]]:
        return enumerate(self.images)

    @staticmethod
    def load(job: Tuple[int, InputImage], spec: PreprocessSpec) -> Frame:
        index, image = job
        start = time.perf_counter()
        data = read_bytes(image.path)
        grey = decode_grey(data, image.path, spec.decode_min_side)
        decoded = time.perf_counter()
        network = resize_to_network(grey, spec)
        return Frame(index, image.relpath, image.path, grey, network, data,
                     {"decode": (decoded - start) * 1000, "preprocess": (time.perf_counter() - decoded) * 1000})

    def close(self) -> None:
        """Nothing to release."""


class VideoFrameSource:
    def __init__(self, uri: str, options: CaptureOptions) -> None:
        self.video = VideoSource(uri, options)
        self.live, self.description, self.fps = self.video.live, self.video.description, self.video.fps
        self.frame_count = self.video.frame_count
        self.skipped: List[str] = []

    @property
    def corrupt(self) -> int:
        return self.video.corrupt

    @property
    def reconnects(self) -> int:
        return self.video.reconnects

    def jobs(self):
        return self.video.frames()

    def load(self, job, spec: PreprocessSpec) -> Frame:
        index, bgr, capture_ms = job
        start = time.perf_counter()
        network = resize_to_network(to_grey(bgr, self.description), spec)
        return Frame(index, f"frame_{index:06d}.jpg", f"{self.description} frame {index}", bgr, network, None,
                     {"decode": capture_ms, "preprocess": (time.perf_counter() - start) * 1000})

    def close(self) -> None:
        self.video.close()


def open_source(spec: str, options: CaptureOptions):
    """An ImageFileSource or a VideoFrameSource for the runner's INPUT."""
    if "://" in spec and not spec.lower().startswith(KNOWN_SCHEMES):
        scheme = spec.split("://", 1)[0]
        raise SourceError(f"unknown input scheme {scheme}://; use a file, folder, glob, video, /dev/videoN, "
                          "v4l2:///dev/videoN, csi://N or rtsp://...")
    if is_video_uri(spec):
        return VideoFrameSource(spec, options)
    return ImageFileSource(spec[len("file://"):] if spec.startswith("file://") else spec)
