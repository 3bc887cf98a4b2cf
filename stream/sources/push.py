"""A source fed by another component (e.g. a WebRTC track): frames are pushed, not pulled."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from stream.frames import Frame
from stream.queues import StageQueue
from stream.sources.base import Source


class PushSource(Source):
    """Live source whose frames come from `push()` (event-loop thread); `end()` finishes it.

    Same resampling and drop-oldest policy as the other live sources, so a WebRTC call
    is treated exactly like a camera.
    """

    live = True

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._out: StageQueue[Frame] | None = None
        self._ended = asyncio.Event()
        self._error: str | None = None

    def push(self, image: np.ndarray, pts: float, arrival: float | None = None) -> bool:
        """Offer one RGB frame (H, W, 3) uint8 with its PTS in seconds; returns whether it was kept."""
        if self._out is None or self.stopped or not self.resampler.keep(pts):
            return False
        self.frames_in += 1
        frame = Frame(self.stream_id, self.frames_out, float(pts), arrival or time.time(), image, self.generation)
        self.frames_out += 1
        if self.status.state != "live":
            self.report("live", resolution=[int(image.shape[1]), int(image.shape[0])], error=None)
        self._out.put_dropping(frame)
        return True

    def end(self, error: str | None = None) -> None:
        """The producer is gone (e.g. peer hung up, ICE failed)."""
        self._error = error
        self._ended.set()

    def stop(self) -> None:
        super().stop()
        self._ended.set()

    async def run(self, out: StageQueue[Frame]) -> None:
        self._out = out
        self.report("starting")
        await self._ended.wait()
        self._out = None
        if self._error:
            self.report("error", error=self._error)
        else:
            self.report("ended", error=None)
