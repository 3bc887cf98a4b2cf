"""Clip augmentation that keeps temporal coherence: one random spatial transform for all 32 frames.

FTCN detects forgeries from temporal incoherence, so per-frame random crops or jitter would create
exactly the artefact the model learns to call fake. Every random draw here is made once per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ClipAugment:
    """uint8 (T,H,W,3) -> uint8 (T,H,W,3): horizontal flip, scale/translate crop resized back to the
    input size, brightness/contrast/saturation jitter; each parameter drawn once per clip."""

    flip_p: float = 0.5
    scale: tuple[float, float] = (0.85, 1.0)  # side of the crop as a fraction of the frame side
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    p: float = 1.0  # probability of augmenting a clip at all

    @classmethod
    def from_config(cls, aug_cfg: dict) -> ClipAugment | None:
        if not aug_cfg or not aug_cfg.get("enabled", True):
            return None
        return cls(
            flip_p=float(aug_cfg.get("flip_p", 0.5)),
            scale=tuple(aug_cfg.get("scale", (0.85, 1.0))),  # type: ignore[arg-type]
            brightness=float(aug_cfg.get("brightness", 0.2)),
            contrast=float(aug_cfg.get("contrast", 0.2)),
            saturation=float(aug_cfg.get("saturation", 0.2)),
            p=float(aug_cfg.get("p", 1.0)),
        )

    @staticmethod
    def _u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(()))

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        if self.p < 1.0 and float(torch.rand(())) >= self.p:
            return clip
        t, h, w, _ = clip.shape
        x = clip.permute(0, 3, 1, 2).float()  # T,3,H,W
        s = self._u(*self.scale)
        if s < 1.0:
            ch, cw = max(1, round(h * s)), max(1, round(w * s))
            top = int(torch.randint(0, h - ch + 1, ()))
            left = int(torch.randint(0, w - cw + 1, ()))
            x = F.interpolate(x[:, :, top : top + ch, left : left + cw], size=(h, w), mode="bilinear",
                              align_corners=False, antialias=False)
        if float(torch.rand(())) < self.flip_p:
            x = x.flip(-1)
        if self.brightness > 0:
            x = x * self._u(1 - self.brightness, 1 + self.brightness)
        if self.contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True).mean(dim=0, keepdim=True)  # one mean for the clip
            x = (x - mean) * self._u(1 - self.contrast, 1 + self.contrast) + mean
        if self.saturation > 0:
            gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
            x = (x - gray) * self._u(1 - self.saturation, 1 + self.saturation) + gray
        return x.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
