"""Rolling scores and alert hysteresis.

Per face: rolling score = mean of the last K clip scores. Per stream: the max over
live faces. An alert opens when a face's rolling score is >= `on` for `n_on`
consecutive clips and closes when it falls below `off` (or the face leaves).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaceState:
    scores: deque[float]
    above: int = 0  # consecutive clips with rolling >= on
    alert_open: bool = False
    opened_at: float | None = None
    last_time: float = 0.0

    @property
    def rolling(self) -> float:
        return sum(self.scores) / len(self.scores)


@dataclass
class StreamState:
    faces: dict[int, FaceState] = field(default_factory=dict)


@dataclass
class AlertChange:
    """An alert opening or closing on one face."""

    stream_id: str
    track_id: int
    event: str  # "open" | "close"
    score: float
    time: float
    opened_at: float | None
    reason: str = ""


class Aggregator:
    """Pure bookkeeping (no I/O): the pipeline turns its results into events."""

    def __init__(self, window: int = 4, on: float = 0.5, off: float | None = None, n_on: int = 2) -> None:
        if window < 1 or n_on < 1:
            raise ValueError("window and n_on must be >= 1")
        self.window = int(window)
        self.on = float(on)
        self.off = float(self.on if off is None else off)
        if self.off > self.on:
            raise ValueError("alert.off must be <= alert.on")
        self.n_on = int(n_on)
        self.streams: dict[str, StreamState] = {}

    @classmethod
    def from_config(cls, agg_cfg: dict[str, Any], model_threshold: float) -> Aggregator:
        alert = agg_cfg.get("alert", {}) or {}
        on = alert.get("on")
        on = model_threshold if on is None else float(on)
        off = alert.get("off")
        off = on * float(alert.get("off_ratio", 0.8)) if off is None else float(off)
        return cls(window=int(agg_cfg.get("window", 4)), on=on, off=off, n_on=int(alert.get("n_on", 2)))

    def add_clip(self, stream_id: str, track_id: int, score: float, now: float) -> tuple[float, list[AlertChange]]:
        """Record one clip score; returns the face's rolling score and any alert change."""
        st = self.streams.setdefault(stream_id, StreamState())
        face = st.faces.get(track_id)
        if face is None:
            face = st.faces[track_id] = FaceState(scores=deque(maxlen=self.window))
        face.scores.append(float(score))
        face.last_time = now
        rolling = face.rolling
        changes: list[AlertChange] = []
        if rolling >= self.on:
            face.above += 1
        else:
            face.above = 0
        if not face.alert_open and face.above >= self.n_on:
            face.alert_open = True
            face.opened_at = now
            changes.append(AlertChange(stream_id, track_id, "open", rolling, now, now, "score"))
        elif face.alert_open and rolling < self.off:
            face.alert_open = False
            changes.append(AlertChange(stream_id, track_id, "close", rolling, now, face.opened_at, "score"))
            face.opened_at = None
        return rolling, changes

    def end_face(self, stream_id: str, track_id: int, now: float, reason: str = "face lost") -> list[AlertChange]:
        """A track ended: it no longer counts for the stream score; an open alert closes."""
        st = self.streams.get(stream_id)
        face = st.faces.pop(track_id, None) if st else None
        if face is not None and face.alert_open:
            return [AlertChange(stream_id, track_id, "close", face.rolling, now, face.opened_at, reason)]
        return []

    def end_stream(self, stream_id: str, now: float, reason: str = "stream ended") -> list[AlertChange]:
        changes: list[AlertChange] = []
        st = self.streams.get(stream_id)
        for tid in list(st.faces) if st else []:
            changes += self.end_face(stream_id, tid, now, reason)
        self.streams.pop(stream_id, None)
        return changes

    def stream_score(self, stream_id: str) -> tuple[float | None, int]:
        """(max rolling score over live faces or None, live face count)."""
        st = self.streams.get(stream_id)
        if not st or not st.faces:
            return None, 0
        return max(f.rolling for f in st.faces.values()), len(st.faces)

    def open_alerts(self, stream_id: str) -> list[int]:
        st = self.streams.get(stream_id)
        return sorted(t for t, f in st.faces.items() if f.alert_open) if st else []
