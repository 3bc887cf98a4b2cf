"""Mux: batch frames across all streams (`max_batch` or `batch_timeout_ms`, whichever first)."""

from __future__ import annotations

import asyncio
import time

from stream.frames import Frame, FrameBatch
from stream.queues import StageQueue


class Muxer:
    """Round-robin over the per-stream source queues, so one fast stream cannot starve others.

    Streams come and go at runtime through `add`/`remove`.
    """

    def __init__(self, out: StageQueue[FrameBatch], max_batch: int = 8, batch_timeout_ms: float = 10.0) -> None:
        self.out = out
        self.max_batch = max(1, int(max_batch))
        self.timeout_s = max(0.0, float(batch_timeout_ms) / 1000.0)
        self.inputs: dict[str, StageQueue[Frame]] = {}
        self._ready = asyncio.Event()
        self._rr = 0
        self.batches = 0

    def add(self, stream_id: str, q: StageQueue[Frame]) -> None:
        q.on_put = self._ready.set
        self.inputs[stream_id] = q
        self._ready.set()

    def remove(self, stream_id: str) -> None:
        q = self.inputs.pop(stream_id, None)
        if q is not None:
            q.on_put = None

    def _take(self, batch: list[Frame]) -> None:
        queues = list(self.inputs.values())
        if not queues:
            return
        progressed = True
        while len(batch) < self.max_batch and progressed:
            progressed = False
            for k in range(len(queues)):
                q = queues[(self._rr + k) % len(queues)]
                if not q.empty() and len(batch) < self.max_batch:
                    batch.append(q.get_nowait())
                    q.task_done()
                    progressed = True
            self._rr = (self._rr + 1) % len(queues)

    def _pending(self) -> bool:
        return any(not q.empty() for q in self.inputs.values())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch: list[Frame] = []
            self._take(batch)
            if not batch:
                continue
            deadline = loop.time() + self.timeout_s
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._ready.clear()
                try:
                    await asyncio.wait_for(self._ready.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                self._take(batch)
            if self._pending():
                self._ready.set()
            self.batches += 1
            await self.out.put(FrameBatch(batch, time.time()))
