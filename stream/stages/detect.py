"""Detect: one RetinaFace forward per mux batch, in a worker thread (the event loop never blocks).

Frames of different sizes are letterboxed to the batch's largest size by padding at the
bottom/right only: coordinates stay frame coordinates, no rescaling back is needed.
`mode="group"` runs one forward per distinct size instead (no padding at all).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from stream.frames import DetectedFrame, Frame, FrameBatch
from stream.queues import StageQueue

log = logging.getLogger("stream.detect")

def letterbox(images: list[np.ndarray]) -> np.ndarray:
    """Stack RGB frames of different sizes into one (N, Hmax, Wmax, 3) batch, zero-padded bottom/right."""
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    if all(im.shape[:2] == (h, w) for im in images):
        return np.stack(images)
    out = np.zeros((len(images), h, w, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i, : im.shape[0], : im.shape[1]] = im
    return out


class DetectStage:
    def __init__(
        self,
        detector: Any,
        inp: StageQueue[FrameBatch],
        emit: Callable[[DetectedFrame], Awaitable[None]],
        executor: Executor,
        metrics: Any = None,
        mode: str = "letterbox",
    ) -> None:
        self.detector = detector
        self.inp = inp
        self.emit = emit
        self.executor = executor
        self.metrics = metrics
        self.mode = mode
        self.forwards = 0
        self.multi_stream_batches = 0
        self.failed_batches = 0

    def _detect(self, frames: list[Frame]) -> list[Any]:
        if self.mode == "group":
            groups: dict[tuple[int, int], list[int]] = {}
            for i, f in enumerate(frames):
                groups.setdefault(f.size, []).append(i)
            out: list[Any] = [None] * len(frames)
            for idx in groups.values():
                for i, d in zip(idx, self.detector.detect(np.stack([frames[i].image for i in idx]))):
                    out[i] = d
                self.forwards += 1
            return out
        self.forwards += 1
        return self.detector.detect(letterbox([f.image for f in frames]))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.inp.get()
            frames = [f for f in batch.frames if f.image is not None]  # end markers pass through
            t0 = time.perf_counter()
            try:
                found = await loop.run_in_executor(self.executor, self._detect, frames) if frames else []
            except Exception:  # noqa: BLE001 - one failed forward loses its frames, not the stage
                log.exception("detector failed on a batch of %d frames; the frames are dropped", len(frames))
                self.failed_batches += 1
                frames = []
                batch = FrameBatch([f for f in batch.frames if f.image is None], batch.created)
                found = []
            it = iter(found)
            dets = [next(it) if f.image is not None else None for f in batch.frames]
            n_streams = len({f.stream_id for f in frames})
            if n_streams > 1:
                self.multi_stream_batches += 1
            if self.metrics is not None:
                self.metrics.stage_latency.labels("detect").observe(time.perf_counter() - t0)
                self.metrics.batch_size.labels("detect").observe(len(frames))
                self.metrics.detect_batch_streams.observe(n_streams)
                if n_streams > 1:
                    self.metrics.multi_stream_batches.inc()
            for frame, det in zip(batch.frames, dets):
                await self.emit(DetectedFrame(frame, det))
            self.inp.task_done()
