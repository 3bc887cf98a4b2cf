"""The clip classifier used by `analyze`, `/predict` and the live pipeline: one interface over every engine.

`engine.backend: torch` with `precision: fp32` runs the reference model itself
(`ftcn.checkpoint.load_ftcn`, exact to the official network). Any other setting goes
through `engines.load`, which falls back tensorrt -> onnxruntime -> torch and logs
the choice once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ftcn.model import normalize_clips

log = logging.getLogger("engines.classifier")


class ClipClassifier:
    """Callable: uint8 clips (B, T, H, W, 3) on any device -> one fake probability per clip.

    `model` is the plain torch FTCN when the reference path is used (so other components
    can share it), else None.
    """

    def __init__(self, run: Any, device: str, name: str, model: torch.nn.Module | None = None) -> None:
        self._run = run
        self.device = device
        self.name = name
        self.model = model

    @torch.inference_mode()
    def __call__(self, clips: torch.Tensor) -> list[float]:
        probs = self._run(normalize_clips(clips.to(self.device)))
        return [float(p) for p in probs[:, 0].float().cpu()]


def load_clip_classifier(cfg: dict[str, Any], checkpoint: str | Path, device: str) -> ClipClassifier:
    """The classifier configured in `cfg["engine"]` for the checkpoint at `checkpoint`."""
    ecfg = cfg.get("engine", {}) or {}
    backend = str(ecfg.get("backend", "torch"))
    precision = str(ecfg.get("precision", "fp32"))
    if backend == "torch" and precision == "fp32" and not ecfg.get("compile") and not ecfg.get("cuda_graphs"):
        from ftcn.checkpoint import load_ftcn

        model = load_ftcn(checkpoint, device=device)
        log.info("classifier: reference torch FTCN (fp32) on %s", device)
        return ClipClassifier(model, device, "torch", model=model)

    from engines.loader import load

    engine = load(checkpoint, network="ftcn", backend=backend, precision=precision, device=device,
                  max_batch=int(ecfg.get("max_batch", 32)), cfg=cfg)
    log.info("classifier: %s", engine.describe())
    return ClipClassifier(engine.infer, device, f"{engine.backend}/{engine.precision}")
