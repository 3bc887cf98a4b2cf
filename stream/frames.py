"""Plain dataclasses carried between pipeline stages (stages never reach into each other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One decoded, resampled frame of one stream.

    `index` counts frames kept after fps resampling (consecutive per stream), `pts` is the
    source presentation time in seconds, `arrival` the wall-clock time (time.time()) when
    the decoder delivered it; latency is measured from `arrival`.
    """

    stream_id: str
    index: int
    pts: float
    arrival: float
    image: np.ndarray  # (H, W, 3) uint8 RGB
    generation: int = 0  # bumps on every reconnect: tracks do not survive a reconnect

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class FrameBatch:
    """Frames of possibly several streams, detected together in one forward."""

    frames: list[Frame]
    created: float


@dataclass
class DetectedFrame:
    """A frame plus its detector output (ftcn.detector.FaceDetections)."""

    frame: Frame
    detections: Any


@dataclass
class ClipJob:
    """A 32-frame face clip ready for alignment, in `ftcn.align.pack_crops` slot layout."""

    stream_id: str
    track_id: int
    frame_indices: list[int]
    pts: list[float]
    arrivals: list[float]
    crops: Any  # torch uint8 (T, 3, S, S): big-box crop of each frame at the slot's top-left
    scales: Any  # torch float64 (T,): slot pixels per frame pixel (1.0 unless shrunk)
    big_boxes: np.ndarray  # (T, 4) int64 frame coords of each crop
    landmarks: np.ndarray  # (T, 5, 2) frame coords
    boxes: np.ndarray  # (T, 4) detector boxes (for sinks)
    generation: int = 0
    live: bool = True


@dataclass
class AlignedClip:
    """An aligned clip (T, 224, 224, 3) uint8 plus the job's metadata."""

    job: ClipJob
    frames: Any  # torch uint8 tensor or numpy array (T, 224, 224, 3)


@dataclass
class ClipScore:
    """A classified clip."""

    job: ClipJob
    score: float
    classified: float  # wall time when the forward finished


@dataclass
class TrackEnded:
    """A face track ended (its rolling score is retired)."""

    stream_id: str
    track_id: int
    generation: int = 0


@dataclass
class FrameFaces:
    """Per-frame boxes of a stream (for overlays and stats)."""

    stream_id: str
    index: int
    pts: float
    faces: list[dict[str, Any]] = field(default_factory=list)
    image: Any = field(default=None, repr=False, compare=False)  # the frame (viewer video: MJPEG/WHEP)
