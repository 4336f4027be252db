"""Video files, V4L2 cameras, CSI cameras and network streams through OpenCV, with reconnection.

URIs follow jetson-inference: ``/dev/video0`` or ``v4l2:///dev/video0`` (MJPG requested, as UVC
cameras give HD at full frame rate only compressed), ``csi://0`` (a GStreamer ``nvarguscamerasrc``
pipeline, needs an OpenCV built with GStreamer, as JetPack's is), ``rtsp://user:pass@host:554/path``
(with GStreamer, decoded by the Jetson's hardware decoder as jetson-utils does; else FFmpeg on the
CPU; rtp/http streams through FFmpeg), and video files.
A live source that stops delivering frames is reopened with exponential back-off; a file that
ends, ends the run.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import cv2
import numpy as np

from cxr_jetson.core.errors import ToolkitError

# FFmpeg inside OpenCV logs its own errors ("moov atom not found") to stderr; ours say it in one line.
# Quiet unless the user asks for its log (set OPENCV_FFMPEG_LOGLEVEL themselves). Read at first use.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtp://", "rtmp://", "http://", "https://", "udp://")
_MAX_CORRUPT_IN_A_ROW = 30
L4T_RELEASE = "/etc/nv_tegra_release"
# --input-codec values (jetson-utils'): how a stream or camera is compressed.
CODECS = ("h264", "h265", "vp8", "vp9", "mpeg2", "mpeg4", "mjpeg")
DECODERS = ("auto", "cpu", "v4l2")
_CPU_DECODERS = {"h264": "avdec_h264", "h265": "avdec_h265", "vp8": "vp8dec", "vp9": "vp9dec",
                 "mpeg2": "mpeg2dec", "mpeg4": "avdec_mpeg4", "mjpeg": "jpegdec"}
_FOURCC = {"mjpeg": "MJPG", "h264": "H264"}


class VideoSourceError(ToolkitError):
    """A video source that cannot be opened or keeps failing."""


@dataclass(frozen=True)
class CaptureOptions:
    width: int = 0       # requested capture size (cameras); 0: the device's default
    height: int = 0
    rate: float = 0.0    # requested frame rate; 0: the device's default
    loop: int = 0        # video files: extra passes, -1 forever
    retries: int = 5     # live sources: reconnection attempts before giving up
    flip: str = "none"   # CSI cameras: none, rotate-180, horizontal, vertical
    codec: str = ""      # streams: h264 (default) ... ; V4L2 cameras: mjpeg (default) or h264
    decoder: str = "auto"  # streams: v4l2 (the Jetson's hardware decoder; the default on a Jetson) or cpu
    latency: int = 200   # RTSP jitter buffer, ms


_CSI_FLIPS = {"none": 0, "counterclockwise": 1, "rotate-180": 2, "clockwise": 3, "horizontal": 4, "vertical": 6}


def local_path(uri: str) -> str:
    """The file a ``file://`` URI (or a plain path) names."""
    return uri[len("file://"):] if uri.startswith("file://") else uri


def is_video_uri(text: str) -> bool:
    lowered = text.lower()
    return (lowered.startswith(("csi://", "v4l2://", "/dev/video")) or lowered.startswith(STREAM_SCHEMES)
            or os.path.splitext(lowered)[1] in VIDEO_EXTENSIONS)


def _gstreamer_available() -> bool:
    try:
        return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))
    except AttributeError:
        return "GStreamer:                   YES" in cv2.getBuildInformation()


def csi_pipeline(sensor: int, options: CaptureOptions) -> str:
    """The GStreamer pipeline jetson-inference uses for a CSI camera, ending in BGR frames for OpenCV."""
    width, height = options.width or 1280, options.height or 720
    rate = int(options.rate or 30)
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={rate}/1, format=NV12 ! nvvidconv flip-method={_CSI_FLIPS[options.flip]} ! "
            "video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=2")


def _hardware_decoder(options: CaptureOptions) -> bool:
    if options.decoder == "auto":
        return os.path.isfile(L4T_RELEASE)  # a Jetson: nvv4l2decoder is there
    return options.decoder == "v4l2"


def rtsp_pipeline(uri: str, options: CaptureOptions) -> str:
    """The GStreamer pipeline jetson-utils builds for an RTSP stream, ending in BGR frames for OpenCV:
    the Jetson's hardware decoder (nvv4l2decoder, then nvvidconv out of NVMM memory), or a CPU decoder."""
    codec = options.codec or "h264"
    if codec not in ("h264", "h265"):
        raise VideoSourceError(f"--input-codec {codec}: RTSP streams here carry h264 or h265")
    source = f"rtspsrc location={uri} latency={options.latency} ! queue ! rtp{codec}depay ! "
    if _hardware_decoder(options):
        decode = "nvv4l2decoder enable-max-performance=1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! "
    else:
        decode = f"{codec}parse ! {_CPU_DECODERS[codec]} ! videoconvert ! "
    return source + decode + "video/x-raw, format=BGR ! appsink drop=true max-buffers=2"


def _target(uri: str, options: CaptureOptions) -> Tuple[object, int, bool, str]:
    """(what VideoCapture opens, its back-end, is it live, a description) for a URI."""
    if uri.startswith("csi://"):
        if not _gstreamer_available():
            raise VideoSourceError(f"{uri} needs OpenCV built with GStreamer (JetPack's OpenCV is; pip's "
                                   "opencv-python is not): use the system python3-opencv on the Jetson")
        sensor = uri[len("csi://"):] or "0"
        if not sensor.isdigit():
            raise VideoSourceError(f"{uri}: the CSI sensor must be a number, e.g. csi://0")
        return csi_pipeline(int(sensor), options), cv2.CAP_GSTREAMER, True, f"CSI camera {sensor}"
    if uri.startswith("v4l2://"):
        uri = uri[len("v4l2://"):]
    if uri.startswith("/dev/video"):
        if not os.path.exists(uri):
            raise VideoSourceError(f"camera {uri} not found (is it plugged in? ls /dev/video*)")
        return uri, cv2.CAP_V4L2, True, f"camera {uri}"
    if uri.lower().startswith(("rtsp://", "rtsps://")) and _gstreamer_available():
        decoder = "hardware" if _hardware_decoder(options) else "CPU"
        return rtsp_pipeline(uri, options), cv2.CAP_GSTREAMER, True, f"stream {uri.split('@')[-1]} ({decoder} decoder)"
    if options.decoder == "v4l2":
        raise VideoSourceError(f"--input-decoder v4l2 for {uri} needs an RTSP stream and an OpenCV built with "
                               "GStreamer (JetPack's python3-opencv)")
    if uri.lower().startswith(STREAM_SCHEMES):
        return uri, cv2.CAP_FFMPEG, True, f"stream {uri.split('@')[-1]}"
    path = local_path(uri)
    if not os.path.isfile(path):
        raise VideoSourceError(f"video {path} does not exist")
    return path, cv2.CAP_ANY, False, f"video {path}"


class VideoSource:
    """Frames in order, as (index, BGR image, capture ms); reconnects live sources."""

    def __init__(self, uri: str, options: CaptureOptions, live: Optional[bool] = None) -> None:
        """``live`` None: decided by the URI (cameras and streams are live, files are not)."""
        self.uri, self.options = uri, options
        self.target, self.api, uri_is_live, self.description = _target(uri, options)
        self.live = uri_is_live if live is None else live
        self.capture = self._open()
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or options.rate or 25.0
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: Optional[int] = count if count > 0 and not self.live and options.loop == 0 else None
        self.corrupt = 0
        self.reconnects = 0

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(self.target, self.api)
        if not capture.isOpened():
            capture.release()
            raise VideoSourceError(f"cannot open {self.description}")
        if self.api == cv2.CAP_V4L2:
            # Before the size: a UVC camera gives 1280x720 or more at full rate only as MJPG (jetson-utils
            # picks it too); OpenCV keeps the camera's own format when it has no MJPG.
            fourcc = _FOURCC.get(self.options.codec or "mjpeg")
            if fourcc:
                capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.options.width),
                            (cv2.CAP_PROP_FRAME_HEIGHT, self.options.height), (cv2.CAP_PROP_FPS, self.options.rate)):
            if value and self.api == cv2.CAP_V4L2:
                capture.set(prop, value)
        return capture

    def _reconnect(self) -> None:
        """Exponential back-off (0.5 s, 1 s, 2 s, ...), reported on stderr; gives up after --input-retries."""
        self.capture.release()
        for attempt in range(1, self.options.retries + 1):
            delay = 0.5 * 2 ** (attempt - 1)
            print(f"classify:  {self.description} lost; reconnecting in {delay:.1f} s "
                  f"(attempt {attempt} of {self.options.retries})", file=sys.stderr, flush=True)
            time.sleep(delay)
            try:
                self.capture = self._open()
            except VideoSourceError:
                continue
            self.reconnects += 1
            return
        raise VideoSourceError(f"{self.description} did not come back after {self.options.retries} attempts")

    def _rewind(self) -> None:
        self.capture.release()
        self.capture = self._open()

    def frames(self) -> Iterator[Tuple[int, np.ndarray, float]]:
        index, passes, failures_in_a_row = 0, 0, 0
        while True:
            start = time.perf_counter()
            ok, image = self.capture.read()
            elapsed = (time.perf_counter() - start) * 1000
            if ok and image is not None and image.size:
                failures_in_a_row = 0
                yield index, image, elapsed
                index += 1
                continue
            if self.live:
                self._reconnect()
                continue
            position = self.capture.get(cv2.CAP_PROP_POS_FRAMES)
            total = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
            if 0 < position < total - 1 and failures_in_a_row < _MAX_CORRUPT_IN_A_ROW:
                self.corrupt += 1  # a damaged frame inside the file: skip it
                failures_in_a_row += 1
                continue
            if index == 0 and passes == 0:
                raise VideoSourceError(f"{self.description} has no frames that can be decoded")
            if self.options.loop == -1 or passes < self.options.loop:
                passes += 1
                self._rewind()
                continue
            return

    def close(self) -> None:
        self.capture.release()
