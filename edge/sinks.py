"""The runner's OUTPUT: an image file, a folder, a printf pattern, a video file, a window or the web view."""
from __future__ import annotations

import os
import re
import socket
import sys
import time
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import check_writable
from cxr_jetson.edge.frames import Frame
from cxr_jetson.edge.web_view import TOKEN_AUTO, WebView, is_every_interface, is_loopback, parse_web_address

# Formats OpenCV writes everywhere; anything else (e.g. .jp2 without its codec, .dcm) is saved as PNG.
WRITABLE_IMAGES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
_VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
_WEB_MAX_SIDE = 1280
# Chroma halved both ways (4:2:0), as libjpeg, PIL and cameras write JPEG by default; OpenCV 5 writes 4:4:4
# unless told, a slower encode for full-size X-rays whose only colour is the answer's box. OpenCV builds
# older than 4.5.5 lack the flag and keep their own default.
_CHROMA_420 = ([cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
               if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_420") else [])
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95] + _CHROMA_420  # 95: OpenCV's default quality


class SinkError(ToolkitError, ValueError):
    """An OUTPUT that cannot take what the INPUT produces."""


class Sink:
    description = "no image output"
    enabled = False

    def planned(self, names: Sequence[Tuple[int, str]]) -> List[str]:
        """The files this sink would write for frames (index, name): checked against the inputs before any
        work, so an output never replaces an input."""
        return []

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        """Write one annotated BGR image."""

    def failed(self) -> None:
        """An input could not be classified (the web view counts it)."""

    def finish(self) -> None:
        """The input ended; a sink may keep showing the last frame (the web view) before closing."""

    def close(self) -> None:
        """Flush and release; a video file is playable afterwards."""


class _FileSink(Sink):
    """A sink that writes files: never over one of the run's inputs (``protected``: their real paths)."""

    enabled = True

    def __init__(self, protected: FrozenSet[str]) -> None:
        self.protected = protected

    def _write_image(self, path: str, image: np.ndarray) -> None:
        if os.path.realpath(path) in self.protected:  # the check before the run covers this; a safety net
            raise OSError(f"{path} is one of the inputs: not written over")
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        jpeg = os.path.splitext(path)[1].lower() in (".jpg", ".jpeg")
        if not cv2.imwrite(path, image, _JPEG_PARAMS if jpeg else []):
            raise OSError(f"could not write {path}")


class ImageFileSink(_FileSink):
    def __init__(self, path: str, protected: FrozenSet[str]) -> None:
        super().__init__(protected)
        self.path, self.description = path, f"image {path}"

    def planned(self, names: Sequence[Tuple[int, str]]) -> List[str]:
        return [self.path]

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        self._write_image(self.path, image)


class FolderSink(_FileSink):
    """Annotated copies in a folder that mirrors the input's layout; two inputs that would land on one
    name (scan.png and scan.webp) get scan.png and scan-2.png."""

    def __init__(self, folder: str, protected: FrozenSet[str]) -> None:
        super().__init__(protected)
        self.folder, self.description = folder, f"folder {folder}"
        self.taken: Set[str] = set()

    @staticmethod
    def _name(name: str, taken: Set[str]) -> str:
        stem, extension = os.path.splitext(name)
        if extension.lower() not in WRITABLE_IMAGES:
            extension = ".png"
        candidate, number = stem + extension, 2
        while candidate in taken:
            candidate, number = f"{stem}-{number}{extension}", number + 1
        taken.add(candidate)
        return candidate

    def planned(self, names: Sequence[Tuple[int, str]]) -> List[str]:
        taken: Set[str] = set()
        return [os.path.join(self.folder, self._name(name, taken)) for _, name in names]

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        self._write_image(os.path.join(self.folder, self._name(frame.name, self.taken)), image)


class PatternSink(_FileSink):
    """``out_%04d.jpg``: one file per frame, numbered from 0."""

    def __init__(self, pattern: str, protected: FrozenSet[str]) -> None:
        super().__init__(protected)
        try:
            pattern % 0
        except (TypeError, ValueError):
            raise SinkError(f"output pattern {pattern} needs one integer field such as %04d") from None
        self.pattern, self.description = pattern, f"files {pattern}"

    def planned(self, names: Sequence[Tuple[int, str]]) -> List[str]:
        return [self.pattern % index for index, _ in names]

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        self._write_image(self.pattern % frame.index, image)


class VideoFileSink(_FileSink):
    """Frames into a video file, opened at the first frame's size; close() finalises it."""

    def __init__(self, path: str, fps: float, protected: FrozenSet[str]) -> None:
        super().__init__(protected)
        self.path, self.fps = path, fps or 25.0
        self.codec = _VIDEO_CODECS[os.path.splitext(path)[1].lower()]
        self.writer: Optional[cv2.VideoWriter] = None
        self.size = (0, 0)
        self.description = f"video {path} ({self.codec}, {self.fps:g} fps)"

    def planned(self, names: Sequence[Tuple[int, str]]) -> List[str]:
        return [self.path]

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*self.codec), self.fps, self.size)
            if not self.writer.isOpened():
                raise SinkError(f"OpenCV cannot write {self.path} with codec {self.codec}")
        if (image.shape[1], image.shape[0]) != self.size:  # a video keeps one frame size
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class DisplaySink(Sink):
    enabled = True

    def __init__(self, output: str) -> None:
        if re.search(r"GUI:\s+NONE", cv2.getBuildInformation()) or \
                not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY")):
            raise SinkError(f"{output} needs a display ($DISPLAY) and an OpenCV built with GUI support "
                            "(JetPack's python3-opencv or pip's opencv-python, not opencv-python-headless)")
        self.window, self.description = "cxr-jetson classify", "display window"
        self.closed_by_user = False

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        cv2.imshow(self.window, image)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise KeyboardInterrupt  # q or Esc stops the run like Ctrl+C

    def close(self) -> None:
        cv2.destroyAllWindows()


class WebSink(Sink):
    enabled = True

    def __init__(self, output: str, linger: float, token: str = TOKEN_AUTO) -> None:
        host, port = parse_web_address(output)
        self.view = WebView(host, port, token)
        self.linger = linger
        everywhere = is_every_interface(host)
        shown = socket.gethostname() if everywhere else host
        query = f"?token={self.view.token}" if self.view.token else ""
        self.description = f"web view http://{shown}:{self.view.port}/{query}" + (" (all interfaces)" if everywhere else "")
        print(f"classify:  {self.description}", flush=True)
        if not is_loopback(host):
            exposure = ("with the access token in this URL" if self.view.token
                        else "WITHOUT an access token (--web-token none)")
            print(f"classify:  warning: the web view shows patient images to the network on {host}, {exposure}",
                  file=sys.stderr, flush=True)

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        scale = _WEB_MAX_SIDE / max(image.shape[:2])
        if scale < 1:  # a browser view needs no 3000 px frames; streaming them would only add latency
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80] + _CHROMA_420)
        if ok:
            self.view.publish(jpeg.tobytes(), result)

    def failed(self) -> None:
        self.view.failed()

    def finish(self) -> None:
        if self.linger == 0:
            return
        print(f"classify:  input ended; the web view keeps the last frame "
              f"{'until Ctrl+C' if self.linger < 0 else f'for {self.linger:g} s'}", flush=True)
        deadline = time.monotonic() + self.linger if self.linger > 0 else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)

    def close(self) -> None:
        self.view.close()


def output_folder(output: Optional[str]) -> Optional[str]:
    """The folder OUTPUT names, when it names one (no scheme, and no video, image or pattern name)."""
    if not output or "://" in output or "%" in output:
        return None
    if os.path.isdir(output) or not os.path.splitext(output.lower())[1]:
        return output
    return None


def open_sink(output: Optional[str], single_image: bool, fps: float, linger: float = -1,
              protected: FrozenSet[str] = frozenset(), web_token: str = TOKEN_AUTO) -> Sink:
    """The sink for OUTPUT; ``single_image`` says whether the input is exactly one image; ``protected``
    the real paths of the input files, which no output may replace. A file output is checked writable."""
    if not output:
        return Sink()
    lowered = output.lower()
    if lowered.startswith("display://"):
        return DisplaySink(output)
    if lowered.startswith("http://"):
        return WebSink(output, linger, web_token)
    if "://" in output:
        raise SinkError(f"unknown output {output}; use a file, folder, pattern like out_%04d.jpg, video .mp4, "
                        "display://0 or http://@:PORT")
    folder = output_folder(output)
    if folder is not None:
        check_writable(folder, "output folder", is_folder=True)
        return FolderSink(folder, protected)
    extension = os.path.splitext(lowered)[1]
    if extension not in _VIDEO_CODECS and "%" not in output and extension not in WRITABLE_IMAGES:
        raise SinkError(f"cannot write {output}: use {', '.join(sorted(WRITABLE_IMAGES))}, a folder, or a video "
                        f"({', '.join(sorted(_VIDEO_CODECS))})")
    check_writable(output, "output")
    if extension in _VIDEO_CODECS:
        return VideoFileSink(output, fps, protected)
    if "%" in output:
        return PatternSink(output, protected)
    if not single_image:
        raise SinkError(f"output {output} is one file but the input has several images or frames; give a "
                        "folder, a pattern such as out_%04d.jpg, or a video file")
    return ImageFileSink(output, protected)
