"""The runner's INPUT: image files (a file, a folder, a quoted glob; DICOM included) or a video source.

Every source implements ``Source``: ``jobs()`` gives cheap descriptions of what comes next, in order;
``load(job, decode_min_side)`` does the decode work, in the pipeline's worker threads, and returns a
Frame; the pipeline then makes the network input from it (core/preprocess.py), the same way for
every source. A new kind of input is one class here and one entry in ``SOURCES``.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterator, List, Optional, Tuple

try:  # typing.Protocol is Python 3.8+
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

from cxr_jetson.core.decode import decode_grey, read_bytes, to_grey
from cxr_jetson.core.image_files import InputError, InputImage, expand_input
from cxr_jetson.edge.frames import Frame
from cxr_jetson.edge.video_source import STREAM_SCHEMES, CaptureOptions, VideoSource, is_video_uri, local_path

KNOWN_SCHEMES = ("file://", "csi://", "v4l2://") + STREAM_SCHEMES


class Source(Protocol):
    live: bool                    # a camera or stream: frames come when they come, one at a time
    fps: float                    # frame rate of a video source; 0 for still images
    frame_count: Optional[int]    # None when not known in advance (cameras, looped videos)
    description: str
    skipped: List[str]            # files passed over (not images)
    corrupt: int                  # damaged frames skipped
    reconnects: int

    def jobs(self) -> Iterator[Any]:
        """What comes next, in order; cheap (the decoding happens in ``load``)."""

    def origin(self, job: Any) -> str:
        """Where a job comes from, for results and error messages."""

    def files(self) -> List[str]:
        """The input files, which no output may replace."""

    def names(self) -> List[Tuple[int, str]]:
        """(index, name) of every frame known before the run: what a sink plans to write from."""

    def load(self, job: Any, decode_min_side: int) -> Frame:
        """Decode one job; raises ImageDecodeError or OSError for a bad file."""

    def close(self) -> None:
        """Release the device or file."""


class ImageFileSource:
    live = False
    fps = 0.0

    def __init__(self, spec: str, options: CaptureOptions, exclude: Optional[str] = None) -> None:  # noqa: ARG002
        path = local_path(spec)
        self.images, self.skipped = expand_input(path, exclude)
        self.frame_count: Optional[int] = len(self.images)
        self.description = f"{len(self.images)} image(s) from {path}"
        self.corrupt = self.reconnects = 0

    @staticmethod
    def accepts(spec: str) -> bool:
        return not is_video_uri(spec)

    def jobs(self) -> Iterator[Tuple[int, InputImage]]:
        return enumerate(self.images)

    @staticmethod
    def origin(job: Tuple[int, InputImage]) -> str:
        return job[1].path

    def files(self) -> List[str]:
        """The input files (read, never written)."""
        return [image.path for image in self.images]

    def names(self) -> List[Tuple[int, str]]:
        return [(index, image.relpath) for index, image in enumerate(self.images)]

    @staticmethod
    def load(job: Tuple[int, InputImage], decode_min_side: int) -> Frame:
        index, image = job
        start = time.perf_counter()
        data = read_bytes(image.path)
        grey = decode_grey(data, image.path, decode_min_side)
        return Frame(index, image.relpath, image.path, grey, grey, data,
                     {"decode": (time.perf_counter() - start) * 1000})

    def close(self) -> None:
        """Nothing to release."""


class VideoFrameSource:
    def __init__(self, uri: str, options: CaptureOptions, exclude: Optional[str] = None) -> None:  # noqa: ARG002
        self.video = VideoSource(uri, options)
        self.uri = uri
        self.live, self.description, self.fps = self.video.live, self.video.description, self.video.fps
        self.frame_count = self.video.frame_count
        self.skipped: List[str] = []

    @staticmethod
    def accepts(spec: str) -> bool:
        return is_video_uri(spec)

    @property
    def corrupt(self) -> int:
        return self.video.corrupt

    @property
    def reconnects(self) -> int:
        return self.video.reconnects

    def jobs(self):
        return self.video.frames()

    def origin(self, job) -> str:
        return f"{self.description} frame {job[0]}"

    def files(self) -> List[str]:
        path = local_path(self.uri)
        return [path] if os.path.isfile(path) else []

    def names(self) -> List[Tuple[int, str]]:
        return []  # frames are not known before they come

    def load(self, job, decode_min_side: int) -> Frame:  # noqa: ARG002 (frames arrive decoded)
        index, bgr, capture_ms = job
        return Frame(index, f"frame_{index:06d}.jpg", self.origin(job), bgr, to_grey(bgr, self.description),
                     None, {"decode": capture_ms})

    def close(self) -> None:
        self.video.close()


# The first class whose accepts() takes the INPUT opens it.
SOURCES = (VideoFrameSource, ImageFileSource)


def open_source(spec: str, options: CaptureOptions, exclude: Optional[str] = None) -> Source:
    """The Source for the runner's INPUT; ``exclude``: a folder never read (the output folder)."""
    if "://" in spec and not spec.lower().startswith(KNOWN_SCHEMES):
        scheme = spec.split("://", 1)[0]
        raise InputError(f"unknown input scheme {scheme}://; use a file, folder, glob, video, /dev/videoN, "
                         "v4l2:///dev/videoN, csi://N or rtsp://...")
    kind = next(source for source in SOURCES if source.accepts(spec))
    return kind(spec, options, exclude)
