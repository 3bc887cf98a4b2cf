"""The common engine interface: `infer(batch) -> outputs`, torch tensors on the engine's device.

An engine wraps one network (FTCN+TT or RetinaFace) run by one backend. Batches larger than
`max_batch` are split into chunks, so callers never need to know the backend's profile limits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("ftcn.engines")

NETWORKS = ("ftcn", "retinaface")
BACKENDS = ("tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "bf16")

# Names of the graph inputs/outputs, shared by ONNX export, ONNX Runtime and TensorRT.
IO_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ftcn": (("clips",), ("prob",)),
    "retinaface": (("image",), ("loc", "conf", "landms")),
}

Outputs = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass
class EngineOptions:
    """Backend-specific knobs with defaults; `from_config` reads the `engine` config section."""

    conv_impl: str = "auto"  # torch FTCN: auto | conv3d | conv3d_cl | conv2d | matmul
    compile: bool = False  # torch: torch.compile the module
    cuda_graphs: bool = False  # torch (CUDA): capture one CUDA graph per batch bucket
    min_batch: int = 1  # TensorRT optimisation profile
    opt_batch: int | None = None  # None = max_batch
    retinaface_hw: tuple[int, int] = (640, 640)  # TensorRT profile / export sample size for RetinaFace
    workspace_gb: float = 4.0  # TensorRT builder workspace
    cache_dir: str | None = None  # engine + ONNX cache; None = $FTCN_ENGINE_DIR or XDG cache
    parity_tolerance: float = 1e-2  # TensorRT: refuse to cache an engine worse than this
    ort_threads: int = 0  # ONNX Runtime intra-op threads (0 = ORT default)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None, **overrides: Any) -> EngineOptions:
        section = dict((cfg or {}).get("engine", {}) or {})
        for sub in ("torch", "tensorrt", "onnxruntime"):
            section.update(section.pop(sub, {}) or {})
        section.update({k: v for k, v in overrides.items() if v is not None})
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: v for k, v in section.items() if k in known}
        if "retinaface_hw" in kwargs:
            kwargs["retinaface_hw"] = tuple(int(v) for v in kwargs["retinaface_hw"])
        extra = {k: v for k, v in section.items() if k not in known}
        return cls(**kwargs, extra=extra)


class Engine:
    """Base class: subclasses implement `_run(chunk)` for chunks of at most `max_batch` items."""

    backend: str = "?"

    def __init__(self, network: str, precision: str, device: torch.device, max_batch: int) -> None:
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; choose from {NETWORKS}")
        self.network = network
        self.precision = precision
        self.device = torch.device(device)
        self.max_batch = int(max_batch)
        self.fallback_reason: str | None = None

    def describe(self) -> str:
        return f"{self.network}/{self.backend}/{self.precision} on {self.device} (max batch {self.max_batch})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def _run(self, batch: torch.Tensor) -> Outputs:
        raise NotImplementedError

    def infer(self, batch: torch.Tensor) -> Outputs:
        """Run the network on `batch` (any batch size >= 1); outputs are float32 on `self.device`.

        FTCN: normalised clips (N,3,32,224,224) -> probability (N,1).
        RetinaFace: preprocessed images (N,3,H,W) -> (loc (N,P,4), conf (N,P,2), landms (N,P,10)).
        """
        if batch.shape[0] < 1:
            raise ValueError("empty batch")
        batch = batch.to(self.device, torch.float32, non_blocking=True)
        if batch.shape[0] <= self.max_batch:
            return self._run(batch)
        parts = [self._run(batch[i : i + self.max_batch]) for i in range(0, batch.shape[0], self.max_batch)]
        if isinstance(parts[0], torch.Tensor):
            return torch.cat(parts)  # type: ignore[arg-type]
        return tuple(torch.cat([p[j] for p in parts]) for j in range(len(parts[0])))

    __call__ = infer
