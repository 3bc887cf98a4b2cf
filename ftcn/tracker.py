"""Per-stream IoU face tracker shared by offline analysis and the live pipeline.

Faces are matched frame to frame by box IoU (greedy, best pairs first), like the
reference's `simple_tracking` (IoU threshold 0.5, a track starts only on a
confident detection), but tracks may start and end anywhere and several faces
are followed at once. Short detector misses (<= `max_gap` frames) are bridged by
linear interpolation of box and landmarks, so a blink of the detector does not
cut a 32-frame clip; a longer gap ends the track.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only for hints: the tracker needs .boxes/.scores/.landmarks
    from ftcn.detector import FaceDetections


@dataclass
class TrackedFace:
    """One face of one track in one frame."""

    track_id: int
    frame_index: int
    box: np.ndarray  # (4,) float64 x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2) float64
    score: float
    interpolated: bool = False


@dataclass
class TrackerStep:
    """What one `update` produced: faces in frame order, and tracks that ended."""

    faces: list[TrackedFace] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)


@dataclass
class _Track:
    track_id: int
    last_frame: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    length: int = 1


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes a (N,4) and b (M,4), x1y1x2y2."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class IoUTracker:
    """Greedy IoU tracker. Feed every processed frame in order, with or without faces."""

    def __init__(self, iou_threshold: float = 0.5, min_start_score: float = 0.8, max_gap: int = 2) -> None:
        self.iou_threshold = float(iou_threshold)
        self.min_start_score = float(min_start_score)
        self.max_gap = int(max_gap)
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0
        self._last_frame: int | None = None

    @classmethod
    def from_config(cls, tracker_cfg: dict[str, Any]) -> IoUTracker:
        return cls(
            iou_threshold=tracker_cfg.get("iou_threshold", 0.5),
            min_start_score=tracker_cfg.get("min_start_score", 0.8),
            max_gap=tracker_cfg.get("max_gap", 2),
        )

    @property
    def live_tracks(self) -> list[int]:
        return sorted(self._tracks)

    def update(self, frame_index: int, dets: FaceDetections) -> TrackerStep:
        """Match `dets` of `frame_index` to live tracks; frames must come in increasing order."""
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise ValueError(f"frames must increase: got {frame_index} after {self._last_frame}")
        self._last_frame = frame_index
        step = TrackerStep()

        # Tracks whose gap can no longer be bridged end before matching.
        for tid in [t for t, tr in self._tracks.items() if frame_index - tr.last_frame - 1 > self.max_gap]:
            del self._tracks[tid]
            step.ended.append(tid)

        boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)
        n_det = boxes.shape[0]
        track_ids = sorted(self._tracks)
        matched_det: dict[int, int] = {}
        if track_ids and n_det:
            ious = box_iou(np.stack([self._tracks[t].box for t in track_ids]), boxes)
            # Greedy global matching: best IoU pairs first.
            order = np.argsort(-ious, axis=None, kind="stable")
            used_t: set[int] = set()
            used_d: set[int] = set()
            for flat in order:
                ti, di = divmod(int(flat), n_det)
                if ious[ti, di] < self.iou_threshold:
                    break
                if ti in used_t or di in used_d:
                    continue
                used_t.add(ti)
                used_d.add(di)
                matched_det[track_ids[ti]] = di

        bridged: list[TrackedFace] = []
        current: list[TrackedFace] = []
        for tid, di in matched_det.items():
            tr = self._tracks[tid]
            box = boxes[di].copy()
            lm = np.asarray(dets.landmarks[di], dtype=np.float64).reshape(5, 2).copy()
            score = float(dets.scores[di])
            gap = frame_index - tr.last_frame - 1
            for k in range(1, gap + 1):
                w = k / (gap + 1)
                bridged.append(
                    TrackedFace(
                        track_id=tid,
                        frame_index=tr.last_frame + k,
                        box=(1 - w) * tr.box + w * box,
                        landmarks=(1 - w) * tr.landmarks + w * lm,
                        score=(1 - w) * tr.score + w * score,
                        interpolated=True,
                    )
                )
            tr.length += gap + 1
            tr.last_frame, tr.box, tr.landmarks, tr.score = frame_index, box, lm, score
            current.append(TrackedFace(tid, frame_index, box, lm, score))

        used = set(matched_det.values())
        for di in range(n_det):
            if di in used or float(dets.scores[di]) < self.min_start_score:
                continue
            tid = self._next_id
            self._next_id += 1
            box = boxes[di].copy()
            lm = np.asarray(dets.landmarks[di], dtype=np.float64).reshape(5, 2).copy()
            self._tracks[tid] = _Track(tid, frame_index, box, lm, float(dets.scores[di]))
            current.append(TrackedFace(tid, frame_index, box, lm, float(dets.scores[di])))

        bridged.sort(key=lambda f: (f.frame_index, f.track_id))
        current.sort(key=lambda f: f.track_id)
        step.faces = bridged + current
        return step

    def finish(self) -> list[int]:
        """End every live track (end of input); returns their ids."""
        ended = sorted(self._tracks)
        self._tracks.clear()
        return ended
