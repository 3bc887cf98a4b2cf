"""Per-track clip buffers: a fixed-capacity ring of the last 32 big-box crops + landmarks.

Crops are written once into slots of a preallocated (capacity, 3, S, S) uint8 tensor
on the pipeline device (the `ftcn.align.pack_crops` slot layout: crop at the top-left,
`scale` recorded when it had to be shrunk), so a clip is a gather of 32 slots and
the GPU never sees per-frame uploads twice. `slot=None` grows S to the largest crop
seen (exact, no shrinking; bounded by the frame size); a fixed S bounds memory.
"""

from __future__ import annotations

import numpy as np
import torch

from ftcn.align import pack_crops
from stream.frames import ClipJob


class CropRing:
    """Ring of the newest `capacity` crops of one track, emitting a clip every `stride` pushes."""

    def __init__(
        self, stream_id: str, track_id: int, capacity: int = 32, stride: int = 8,
        slot: int | None = None, device: str = "cpu", generation: int = 0,
    ) -> None:
        self.stream_id = stream_id
        self.track_id = track_id
        self.capacity = capacity
        self.stride = stride
        self.fixed_slot = slot
        self.device = torch.device(device)
        self.generation = generation
        self.buf: torch.Tensor | None = None
        self.scales = torch.ones(capacity, dtype=torch.float64)
        self.big_boxes = np.zeros((capacity, 4), np.int64)
        self.landmarks = np.zeros((capacity, 5, 2), np.float64)
        self.boxes = np.zeros((capacity, 4), np.float64)
        self.meta: list[tuple[int, float, float]] = [(0, 0.0, 0.0)] * capacity  # index, pts, arrival
        self.pushed = 0

    def _ensure(self, need: int) -> int:
        slot = self.fixed_slot or max(need, 1)
        if self.buf is None:
            self.buf = torch.zeros((self.capacity, 3, slot, slot), dtype=torch.uint8, device=self.device)
        elif self.fixed_slot is None and need > self.buf.shape[-1]:
            grown = torch.zeros((self.capacity, 3, need, need), dtype=torch.uint8, device=self.device)
            s = self.buf.shape[-1]
            grown[:, :, :s, :s] = self.buf
            self.buf = grown
        return int(self.buf.shape[-1])

    def push(
        self, crop: np.ndarray, big_box: np.ndarray, landmarks: np.ndarray, box: np.ndarray,
        frame_index: int, pts: float, arrival: float,
    ) -> ClipJob | None:
        h, w = crop.shape[:2]
        slot = self._ensure(max(h, w))
        i = self.pushed % self.capacity
        assert self.buf is not None
        if max(h, w) > slot:
            packed, scale = pack_crops([crop], np.asarray(big_box)[None], slot, device=self.device)
            self.buf[i] = packed[0]
            self.scales[i] = float(scale[0])
        elif h and w:
            self.buf[i, :, :h, :w] = torch.from_numpy(np.ascontiguousarray(crop)).to(self.device).permute(2, 0, 1)
            self.scales[i] = 1.0
        self.big_boxes[i] = big_box
        self.landmarks[i] = landmarks
        self.boxes[i] = box
        self.meta[i] = (frame_index, pts, arrival)
        self.pushed += 1
        if self.pushed >= self.capacity and (self.pushed - self.capacity) % self.stride == 0:
            return self.clip()
        return None

    def clip(self) -> ClipJob:
        """The last `capacity` pushes in time order (a copy: the ring keeps moving)."""
        assert self.buf is not None
        start = self.pushed % self.capacity
        order = [(start + k) % self.capacity for k in range(self.capacity)]
        idx = torch.as_tensor(order, device=self.device)
        return ClipJob(
            stream_id=self.stream_id,
            track_id=self.track_id,
            frame_indices=[self.meta[k][0] for k in order],
            pts=[self.meta[k][1] for k in order],
            arrivals=[self.meta[k][2] for k in order],
            crops=self.buf.index_select(0, idx),
            scales=self.scales[order].clone(),
            big_boxes=self.big_boxes[order].copy(),
            landmarks=self.landmarks[order].copy(),
            boxes=self.boxes[order].copy(),
            generation=self.generation,
        )
