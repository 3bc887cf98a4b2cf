"""Fan-out of pipeline events (the MQTT payloads) to sinks: MQTT, viewer websockets, logs.

Subscribers are plain callables run on the event loop; they must not block (a sink
queues and sends in its own task). Every event is the JSON payload documented in
docs/mqtt.md plus the routing fields below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("stream.events")

# kind -> (topic suffix template, retained, qos)
TOPICS: dict[str, tuple[str, bool, int]] = {
    "status": ("{stream}/status", True, 1),
    "face_score": ("{stream}/faces/{track}/score", False, 0),
    "stream_score": ("{stream}/score", False, 0),
    "alert": ("{stream}/alert", True, 1),
    "stats": ("{stream}/stats", False, 0),
}


@dataclass
class Event:
    """One pipeline event. `kind` is a key of TOPICS (others, e.g. `frame_faces`, are not sent to MQTT)."""

    kind: str
    stream_id: str
    payload: dict[str, Any]
    track_id: int | None = None
    # Non-JSON extras for in-process subscribers (e.g. the RGB frame of `frame_faces` for the viewer).
    attachment: Any = None


def iso_now(ts: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds (the `time` field of every payload)."""
    dt = datetime.now(timezone.utc) if ts is None else datetime.fromtimestamp(ts, timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous in-order fan-out; a failing subscriber is logged and skipped, never fatal."""

    def __init__(self) -> None:
        self._subs: list[Subscriber] = []
        self.counts: dict[str, int] = {}

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subs.append(fn)
        return lambda: self._subs.remove(fn) if fn in self._subs else None

    def publish(self, event: Event) -> None:
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        for fn in list(self._subs):
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - one bad sink must not stop analysis
                log.exception("event subscriber failed on %s", event.kind)
