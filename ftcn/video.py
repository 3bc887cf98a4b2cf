"""Video files in and out with PyAV: sequential decode (memory bounded) and H.264 mp4 writing.

Decoding is strictly sequential: FaceForensics++ files are yuv444p H.264 and seeking
in them yields corrupted frames, so nothing here seeks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ftcn.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    num_frames: int | None  # container's estimate; None when unknown
    duration: float | None  # seconds
    codec: str
    pix_fmt: str | None


@dataclass
class DecodedFrame:
    index: int  # 0-based decode order
    pts: float | None  # seconds
    rgb: np.ndarray  # (H, W, 3) uint8


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise InputError(f"video not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"empty file: {p}")
    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot open {p} as a video (not a video, or truncated/corrupt): {exc}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{p} has no video stream")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """Read the container header; raises InputError for anything that is not a usable video."""
    with _open(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        frames = int(stream.frames) if stream.frames else None
        if frames is None and duration and fps:
            frames = int(round(duration * fps))
        if not ctx.width or not ctx.height:
            raise InputError(f"{path}: video stream has no frame size")
        return VideoInfo(
            path=str(path),
            width=int(ctx.width),
            height=int(ctx.height),
            fps=fps or 25.0,
            num_frames=frames,
            duration=duration,
            codec=ctx.name,
            pix_fmt=ctx.format.name if ctx.format else None,
        )


class FrameReader:
    """Iterate decoded RGB frames; stops cleanly (with a warning kept in `errors`) on corrupt data.

    Every frame comes out at the size of the first one: a stream whose resolution changes midway
    (concatenated or adaptive-bitrate recordings) is rescaled, so batches stack and boxes stay
    in one coordinate system.
    """

    def __init__(self, path: str | Path, max_frames: int | None = None) -> None:
        self.path = str(path)
        self.max_frames = max_frames
        self.errors: list[str] = []
        self.frames_read = 0

    def __iter__(self) -> Iterator[DecodedFrame]:
        with _open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = stream.time_base
            index = 0
            size: tuple[int, int] | None = None
            try:
                for frame in container.decode(stream):
                    if self.max_frames is not None and index >= self.max_frames:
                        break
                    pts = float(frame.pts * tb) if frame.pts is not None and tb is not None else None
                    if size is None:
                        size = (frame.width, frame.height)
                    elif (frame.width, frame.height) != size:
                        frame = frame.reformat(width=size[0], height=size[1])
                    yield DecodedFrame(index, pts, frame.to_ndarray(format="rgb24"))
                    index += 1
                    self.frames_read = index
            except av.error.FFmpegError as exc:
                msg = f"decoding stopped after {index} frames: {exc}"
                log.warning("%s: %s", self.path, msg)
                self.errors.append(msg)
        if index == 0 and not self.errors:
            self.errors.append("no frame could be decoded")


class VideoWriter:
    """H.264 (yuv420p) mp4 writer; odd frame sizes are padded by one pixel, as yuv420p needs even sizes."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int, crf: int = 23) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._w, self._h = width + (width % 2), height + (height % 2)
        self._stream.width, self._stream.height = self._w, self._h
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if (w, h) != (self._w, self._h):
            # Pad odd sizes; crop a frame larger than the stream (never fail mid-video).
            padded = np.zeros((self._h, self._w, 3), dtype=np.uint8)
            h, w = min(h, self._h), min(w, self._w)
            padded[:h, :w] = rgb[:h, :w]
            rgb = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
