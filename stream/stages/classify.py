"""Classify: FTCN+TT over batches of aligned clips from all streams and faces, in a worker thread."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import torch

from stream.frames import AlignedClip, ClipScore
from stream.queues import StageQueue, get_batch

log = logging.getLogger("stream.classify")


def load_classifier(cfg: dict[str, Any], checkpoint: str | Path, device: str) -> Any:
    """The configured engine (`engine.backend`, with fallback); see engines/classifier.py."""
    from engines.classifier import load_clip_classifier

    return load_clip_classifier(cfg, checkpoint, device)


class ClassifyStage:
    """Batches clips across streams (`max_batch`/timeout); control items pass through in order."""

    def __init__(
        self, classifier: Callable[[torch.Tensor], list[float]], inp: StageQueue[Any],
        emit: Callable[[Any], Awaitable[None]], executor: Executor, max_batch: int = 4,
        timeout_ms: float = 20.0, metrics: Any = None,
    ) -> None:
        self.classifier = classifier
        self.inp = inp
        self.emit = emit
        self.executor = executor
        self.max_batch = max_batch
        self.timeout_s = timeout_ms / 1000.0
        self.metrics = metrics
        self.clips = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await get_batch(self.inp, self.max_batch, self.timeout_s)
            clips = [i for i in items if isinstance(i, AlignedClip)]
            scores: dict[int, float] = {}
            if clips:
                t0 = time.perf_counter()
                try:
                    x = torch.stack([c.frames for c in clips])
                    probs = await loop.run_in_executor(self.executor, self.classifier, x)
                except Exception:  # noqa: BLE001 - one failed batch loses its clips, not the stage
                    log.exception("classifier failed on a batch of %d clips; the clips are dropped", len(clips))
                    items = [i for i in items if not isinstance(i, AlignedClip)]
                    for _ in clips:
                        self.inp.task_done()
                    clips, probs = [], []
                done = time.time()
                scores = {id(c): p for c, p in zip(clips, probs)}
                self.clips += len(clips)
                if self.metrics is not None and clips:
                    self.metrics.stage_latency.labels("classify").observe(time.perf_counter() - t0)
                    self.metrics.batch_size.labels("classify").observe(len(clips))
            for item in items:
                if isinstance(item, AlignedClip):
                    await self.emit(ClipScore(item.job, scores[id(item)], done))
                else:
                    await self.emit(item)
                self.inp.task_done()
