"""The one offline path from a video file to aligned 32-frame face clips.

decode (PyAV, sequential) -> detect (RetinaFace, batched) -> track (IoU) -> big-box
crops -> clips per track (`ftcn.clips`) -> one joint alignment per clip.

`analyze`, `/predict` and `preprocess` all use this, so training data and
inference see exactly the same faces. Memory is bounded: per live track only the
last 32 crops are kept (tracks shorter than 32 frames keep all of theirs until they
end, for the reference's mirror padding), and a few recent frames for bridging gaps.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ftcn.align import align_clip_cv2, align_clip_torch, crop_big_box
from ftcn.clips import track_clip_indices
from ftcn.tracker import IoUTracker, TrackedFace
from ftcn.video import DecodedFrame, FrameReader

log = logging.getLogger(__name__)


@dataclass
class FaceRecord:
    """One tracked face in one frame, with its big-box crop kept for alignment."""

    frame_index: int
    box: np.ndarray
    landmarks: np.ndarray
    big_box: np.ndarray
    crop: np.ndarray
    score: float
    interpolated: bool


@dataclass
class AlignedClip:
    track_id: int
    frame_indices: list[int]  # clip_size entries; repeats for mirror-padded short tracks
    frames: np.ndarray  # (clip_size, imsize, imsize, 3) uint8 RGB


@dataclass
class TrackSummary:
    """Everything about a track that outlives its crops: per-frame boxes and detector scores."""

    track_id: int
    boxes: dict[int, list[float]] = field(default_factory=dict)
    det_scores: dict[int, float] = field(default_factory=dict)
    interpolated: set[int] = field(default_factory=set)

    @property
    def first_frame(self) -> int:
        return min(self.boxes)

    @property
    def last_frame(self) -> int:
        return max(self.boxes)

    @property
    def num_frames(self) -> int:
        return len(self.boxes)


class _TrackClips:
    """Streaming clip emission for one track, equal to `track_clip_indices` over its whole life."""

    def __init__(self, clip_size: int, stride: int) -> None:
        self.clip_size = clip_size
        self.stride = stride
        self.window: deque[FaceRecord] = deque(maxlen=clip_size)
        self.count = 0
        self.next_start = 0
        self.last_end = -1  # track position of the last frame of the last emitted clip

    def push(self, rec: FaceRecord) -> list[FaceRecord] | None:
        self.window.append(rec)
        self.count += 1
        start = self.count - self.clip_size
        if start >= 0 and start == self.next_start:
            self.next_start += self.stride
            self.last_end = self.count - 1
            return list(self.window)
        return None

    def finish(self) -> list[list[FaceRecord]]:
        if self.count == 0:
            return []
        if self.count < self.clip_size:
            recs = list(self.window)
            return [[recs[i] for i in idx] for idx in track_clip_indices(self.count, self.stride, self.clip_size)]
        if self.last_end != self.count - 1:
            return [list(self.window)]
        return []


class ClipExtractor:
    """Runs the offline face path over one video; yields aligned clips as tracks grow.

    After iteration: `tracks` (per-track boxes), `num_frames`, `decode_errors`, `timings`.
    """

    def __init__(
        self,
        detector: Any,
        cfg: dict[str, Any],
        stride: int = 1,
        align_backend: str = "cv2",
        device: str = "cpu",
    ) -> None:
        self.detector = detector
        self.cfg = cfg
        self.stride = int(stride)
        self.clip_size = int(cfg["model"]["clip_size"])
        self.imsize = int(cfg["model"]["imsize"])
        self.scale = float(cfg["align"]["big_box_scale"])
        self.det_batch = max(1, int(cfg["detector"].get("batch_size", 8)))
        self.align_backend = align_backend
        self.device = device
        self.tracks: dict[int, TrackSummary] = {}
        self.num_frames = 0
        self.frame_pts: list[float | None] = []
        self.decode_errors: list[str] = []
        self.timings: dict[str, float] = {"decode_s": 0.0, "detect_s": 0.0, "track_crop_s": 0.0, "align_s": 0.0}

    def _align(self, track_id: int, recs: list[FaceRecord]) -> AlignedClip:
        t0 = time.perf_counter()
        crops = [r.crop for r in recs]
        big = np.stack([r.big_box for r in recs])
        lm5 = np.stack([r.landmarks for r in recs])
        if self.align_backend == "torch":
            frames = align_clip_torch(crops, big, lm5, imsize=self.imsize, device=self.device)
        else:
            frames = align_clip_cv2(crops, big, lm5, imsize=self.imsize)
        self.timings["align_s"] += time.perf_counter() - t0
        return AlignedClip(track_id, [r.frame_index for r in recs], np.asarray(frames, dtype=np.uint8))

    def run(
        self,
        video_path: str,
        max_frames: int | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> Iterator[AlignedClip]:
        tracker = IoUTracker.from_config(self.cfg["tracker"])
        states: dict[int, _TrackClips] = {}
        recent: deque[DecodedFrame] = deque(maxlen=int(self.cfg["tracker"].get("max_gap", 2)) + 1)
        reader = FrameReader(video_path, max_frames=max_frames)
        batch: list[DecodedFrame] = []

        def record(face: TrackedFace) -> list[FaceRecord] | None:
            frame = next((f for f in recent if f.index == face.frame_index), None)
            if frame is None:  # cannot happen while max_gap < len(recent); guard anyway
                return None
            crop, big = crop_big_box(frame.rgb, face.box, self.scale)
            rec = FaceRecord(
                face.frame_index, face.box, face.landmarks, big, np.ascontiguousarray(crop), face.score,
                face.interpolated,
            )
            summary = self.tracks.setdefault(face.track_id, TrackSummary(face.track_id))
            summary.boxes[face.frame_index] = [float(v) for v in face.box]
            summary.det_scores[face.frame_index] = float(face.score)
            if face.interpolated:
                summary.interpolated.add(face.frame_index)
            state = states.setdefault(face.track_id, _TrackClips(self.clip_size, self.stride))
            return state.push(rec)

        def end_tracks(ids: list[int]) -> Iterator[AlignedClip]:
            for tid in ids:
                state = states.pop(tid, None)
                if state is not None:
                    for recs in state.finish():
                        yield self._align(tid, recs)

        def process(frames: list[DecodedFrame]) -> Iterator[AlignedClip]:
            t0 = time.perf_counter()
            dets = self.detector.detect(np.stack([f.rgb for f in frames]))
            self.timings["detect_s"] += time.perf_counter() - t0
            for frame, det in zip(frames, dets):
                t1 = time.perf_counter()
                recent.append(frame)
                step = tracker.update(frame.index, det)
                ready = [(f.track_id, record(f)) for f in step.faces]
                self.timings["track_crop_s"] += time.perf_counter() - t1
                yield from end_tracks(step.ended)
                for tid, recs in ready:
                    if recs is not None:
                        yield self._align(tid, recs)
                if on_frame is not None:
                    on_frame(frame.index)

        t_dec = time.perf_counter()
        for frame in reader:
            self.timings["decode_s"] += time.perf_counter() - t_dec
            self.num_frames = frame.index + 1
            self.frame_pts.append(frame.pts)
            batch.append(frame)
            if len(batch) == self.det_batch:
                yield from process(batch)
                batch = []
            t_dec = time.perf_counter()
        if batch:
            yield from process(batch)
        yield from end_tracks(tracker.finish())
        self.decode_errors = list(reader.errors)
