"""Track: per-stream IoU tracking (ftcn.tracker) feeding per-track crop rings (stream.stages.clipbuf).

Tracks never survive a reconnect (the frame generation changes): the old tracks end
and new ones start, because frame indices and face positions are no longer related.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ftcn.align import crop_big_box
from ftcn.tracker import IoUTracker
from stream.frames import ClipJob, DetectedFrame, Frame, FrameFaces, TrackEnded
from stream.stages.clipbuf import CropRing


@dataclass
class StreamEnd:
    """Control item: the stream's source finished (or was removed); flows behind its last frame."""

    stream_id: str
    reason: str = "ended"


def end_marker(stream_id: str, reason: str = "ended") -> Frame:
    """A Frame-shaped end-of-stream marker that travels through the source queue and mux in order."""
    f = Frame(stream_id, -1, 0.0, time.time(), None)  # type: ignore[arg-type]
    f.end_reason = reason  # type: ignore[attr-defined]
    return f


def is_marker(item: Any) -> bool:
    return isinstance(item, Frame) and item.image is None


@dataclass
class _StreamTracks:
    tracker: IoUTracker
    recent: deque[Frame]
    rings: dict[int, CropRing] = field(default_factory=dict)
    generation: int = 0
    live: bool = True
    processed: int = 0


class TrackStage:
    """Consumes detected frames in order; emits ClipJob / TrackEnded / StreamEnd downstream."""

    def __init__(
        self,
        cfg: dict[str, Any],
        emit: Callable[[Any], Awaitable[None]],
        device: str = "cpu",
        on_faces: Callable[[FrameFaces], None] | None = None,
    ) -> None:
        self.tracker_cfg = cfg["tracker"]
        self.scale = float(cfg["align"]["big_box_scale"])
        scfg = cfg.get("stream", {})
        self.clip_size = int(cfg["model"]["clip_size"])
        self.stride = int(scfg.get("stride", 8))
        self.slot = scfg.get("slot")
        self.device = device
        self.emit = emit
        self.on_faces = on_faces
        self.streams: dict[str, _StreamTracks] = {}
        self.clips_emitted = 0
        self._live: dict[str, bool] = {}
        self._processed: dict[str, int] = {}

    def _state(self, frame: Frame) -> _StreamTracks:
        st = self.streams.get(frame.stream_id)
        if st is None:
            st = self.streams[frame.stream_id] = _StreamTracks(
                IoUTracker.from_config(self.tracker_cfg),
                deque(maxlen=int(self.tracker_cfg.get("max_gap", 2)) + 1),
                generation=frame.generation,
            )
        return st

    def set_live(self, stream_id: str, live: bool) -> None:
        self._live[stream_id] = live

    async def _end_tracks(self, sid: str, st: _StreamTracks, ids: list[int]) -> None:
        for tid in ids:
            st.rings.pop(tid, None)
            await self.emit(TrackEnded(sid, tid, st.generation))

    async def handle(self, item: DetectedFrame) -> None:
        frame = item.frame
        sid = frame.stream_id
        if is_marker(frame):
            st = self.streams.pop(sid, None)
            if st is not None:
                await self._end_tracks(sid, st, st.tracker.finish())
            await self.emit(StreamEnd(sid, getattr(frame, "end_reason", "ended")))
            return
        st = self._state(frame)
        if frame.generation != st.generation:
            await self._end_tracks(sid, st, st.tracker.finish())
            self.streams.pop(sid)
            st = self._state(frame)
        st.recent.append(frame)
        step = st.tracker.update(frame.index, item.detections)
        jobs: list[ClipJob] = []
        faces: list[dict[str, Any]] = []
        for face in step.faces:
            src = next((f for f in st.recent if f.index == face.frame_index), None)
            if src is None:  # the frame was dropped upstream: nothing to crop
                continue
            crop, big = crop_big_box(src.image, face.box, self.scale)
            ring = st.rings.get(face.track_id)
            if ring is None:
                ring = st.rings[face.track_id] = CropRing(
                    sid, face.track_id, self.clip_size, self.stride, self.slot, self.device, st.generation
                )
            job = ring.push(crop, big, face.landmarks, face.box, src.index, src.pts, src.arrival)
            if job is not None:
                job.live = self._live.get(sid, True)
                jobs.append(job)
            if face.frame_index == frame.index:
                faces.append({"track": face.track_id, "box": [round(float(v), 1) for v in face.box],
                              "score": round(float(face.score), 4)})
        await self._end_tracks(sid, st, step.ended)
        st.processed += 1
        self._processed[sid] = self._processed.get(sid, 0) + 1
        if self.on_faces is not None:
            self.on_faces(FrameFaces(sid, frame.index, frame.pts, faces, frame.image))
        for job in jobs:
            self.clips_emitted += 1
            await self.emit(job)

    def forget(self, stream_id: str) -> None:
        """Drop everything kept about a removed stream (its end marker has passed, or never will)."""
        self.streams.pop(stream_id, None)
        self._live.pop(stream_id, None)
        self._processed.pop(stream_id, None)

    def processed(self, stream_id: str) -> int:
        return self._processed.get(stream_id, 0)
