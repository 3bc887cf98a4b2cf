"""Align: batched joint-transform warp of clips (ftcn.align torch path), in a worker thread."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ftcn.align import estimate_clip_transforms_torch, warp_clips_torch
from stream.frames import AlignedClip, ClipJob
from stream.queues import StageQueue, get_batch

log = logging.getLogger("stream.align")

def align_jobs(jobs: list[ClipJob], imsize: int = 224, device: str = "cpu") -> torch.Tensor:
    """Clips (B, T, imsize, imsize, 3) uint8 on `device`: one transform per clip, one grid_sample call."""
    slot = max(int(j.crops.shape[-1]) for j in jobs)
    crops = torch.stack([F.pad(j.crops.to(device), (0, slot - j.crops.shape[-1], 0, slot - j.crops.shape[-2]))
                         for j in jobs])
    bb = torch.as_tensor(np.stack([j.big_boxes for j in jobs]), device=device)
    lm = torch.as_tensor(np.stack([j.landmarks for j in jobs]).astype(np.float64), device=device)
    scales = torch.stack([j.scales for j in jobs]).to(device)
    matrices, left_tops = estimate_clip_transforms_torch(bb, lm, imsize)
    out = warp_clips_torch(crops, bb, scales, matrices, left_tops, imsize)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2)


class AlignStage:
    """Drains ClipJobs into batches; control items (TrackEnded, StreamEnd) pass through in order."""

    def __init__(
        self, inp: StageQueue[Any], emit: Callable[[Any], Awaitable[None]], executor: Executor,
        imsize: int = 224, device: str = "cpu", max_batch: int = 8, timeout_ms: float = 5.0, metrics: Any = None,
    ) -> None:
        self.inp = inp
        self.emit = emit
        self.executor = executor
        self.imsize = imsize
        self.device = device
        self.max_batch = max_batch
        self.timeout_s = timeout_ms / 1000.0
        self.metrics = metrics

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await get_batch(self.inp, self.max_batch, self.timeout_s)
            jobs = [i for i in items if isinstance(i, ClipJob)]
            aligned: dict[int, torch.Tensor] = {}
            if jobs:
                t0 = time.perf_counter()
                try:
                    out = await loop.run_in_executor(self.executor, align_jobs, jobs, self.imsize, self.device)
                except Exception:  # noqa: BLE001 - one failed batch loses its clips, not the stage
                    log.exception("align failed on a batch of %d clips; the clips are dropped", len(jobs))
                    items = [i for i in items if not isinstance(i, ClipJob)]
                    for _ in jobs:
                        self.inp.task_done()
                    jobs, out = [], []
                aligned = {id(j): out[k] for k, j in enumerate(jobs)}
                if self.metrics is not None and jobs:
                    self.metrics.stage_latency.labels("align").observe(time.perf_counter() - t0)
                    self.metrics.batch_size.labels("align").observe(len(jobs))
            for item in items:
                await self.emit(AlignedClip(item, aligned[id(item)]) if isinstance(item, ClipJob) else item)
                self.inp.task_done()
