"""The runner's OUTPUT: an image file, a folder, a printf pattern, a video file, a window or the web view."""
from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, Optional

import cv2
import numpy as np

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.edge.frames import Frame
from cxr_jetson.edge.web_view import WebView, parse_web_address

# Formats OpenCV writes everywhere; anything else (e.g. .jp2 without its codec, .dcm) is saved as PNG.
WRITABLE_IMAGES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
_VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
_WEB_MAX_SIDE = 1280


class SinkError(ToolkitError, ValueError):
    """An OUTPUT that cannot take what the INPUT produces."""


class Sink:
    description = "no image output"
    enabled = False

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        """Write one annotated BGR image."""

    def failed(self) -> None:
        """An input could not be classified (the web view counts it)."""

    def finish(self) -> None:
        """The input ended; a sink may keep showing the last frame (the web view) before closing."""

    def close(self) -> None:
        """Flush and release; a video file is playable afterwards."""


def _write_image(path: str, image: np.ndarray) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    if not cv2.imwrite(path, image):
        raise OSError(f"could not write {path}")


class ImageFileSink(Sink):
    enabled = True

    def __init__(self, path: str) -> None:
        self.path, self.description = path, f"image {path}"

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        _write_image(self.path, image)


class FolderSink(Sink):
    enabled = True

    def __init__(self, folder: str) -> None:
        self.folder, self.description = folder, f"folder {folder}"

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        stem, extension = os.path.splitext(frame.name)
        if extension.lower() not in WRITABLE_IMAGES:
            extension = ".png"
        _write_image(os.path.join(self.folder, stem + extension), image)


class PatternSink(Sink):
    """``out_%04d.jpg``: one file per frame, numbered from 0."""

    enabled = True

    def __init__(self, pattern: str) -> None:
        try:
            pattern % 0
        except (TypeError, ValueError):
            raise SinkError(f"output pattern {pattern} needs one integer field such as %04d") from None
        self.pattern, self.description = pattern, f"files {pattern}"

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        _write_image(self.pattern % frame.index, image)


class VideoFileSink(Sink):
    """Frames into a video file, opened at the first frame's size; close() finalises it."""

    enabled = True

    def __init__(self, path: str, fps: float) -> None:
        self.path, self.fps = path, fps or 25.0
        self.codec = _VIDEO_CODECS[os.path.splitext(path)[1].lower()]
        self.writer: Optional[cv2.VideoWriter] = None
        self.size = (0, 0)
        self.description = f"video {path} ({self.codec}, {self.fps:g} fps)"

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

    def __init__(self, output: str, linger: float) -> None:
        host, port = parse_web_address(output)
        self.view = WebView(host, port)
        self.linger = linger
        everywhere = host == "0.0.0.0"
        self.description = (f"web view http://{'localhost' if everywhere else host}:{self.view.port}/"
                            + (" (all interfaces)" if everywhere else ""))
        print(f"classify:  {self.description}", flush=True)

    def write(self, frame: Frame, image: np.ndarray, result: Dict[str, Any]) -> None:
        scale = _WEB_MAX_SIDE / max(image.shape[:2])
        if scale < 1:  # a browser view needs no 3000 px frames; streaming them would only add latency
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
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


def open_sink(output: Optional[str], single_image: bool, fps: float, linger: float = -1) -> Sink:
    """The sink for OUTPUT; ``single_image`` says whether the input is exactly one image."""
    if not output:
        return Sink()
    lowered = output.lower()
    if lowered.startswith("display://"):
        return DisplaySink(output)
    if lowered.startswith("http://"):
        return WebSink(output, linger)
    if "://" in output:
        raise SinkError(f"unknown output {output}; use a file, folder, pattern like out_%04d.jpg, video .mp4, "
                        "display://0 or http://@:PORT")
    extension = os.path.splitext(lowered)[1]
    if extension in _VIDEO_CODECS:
        return VideoFileSink(output, fps)
    if "%" in output:
        return PatternSink(output)
    if extension in WRITABLE_IMAGES and not os.path.isdir(output):
        if not single_image:
            raise SinkError(f"output {output} is one file but the input has several images or frames; give a "
                            "folder, a pattern such as out_%04d.jpg, or a video file")
        return ImageFileSink(output)
    if extension and not os.path.isdir(output):
        raise SinkError(f"cannot write {output}: use {', '.join(sorted(WRITABLE_IMAGES))}, a folder, or a video "
                        f"({', '.join(sorted(_VIDEO_CODECS))})")
    return FolderSink(output)
