"""Inputs for checking an engine against the float32 torch reference.

The FTCN parity fixture (`$FTCN_SHARED/fixtures/ftcn_parity_io.pt`) is used when present; on a
user's server it is not, so a seeded synthetic batch stands in: the check compares the engine with
the torch model on the same input, which does not need reference outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ftcn.model import normalize_clips


def shared_fixtures() -> Path | None:
    root = os.environ.get("FTCN_SHARED")
    candidates = [Path(root)] if root else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared")
    for c in candidates:
        if (c / "fixtures" / "ftcn_parity_io.pt").is_file():
            return c / "fixtures"
    return None


def ftcn_parity_clips(batch: int = 1) -> torch.Tensor:
    """Normalised clips (batch,3,32,224,224): the fixture's clips (cycled) or a seeded smooth field."""
    fx = shared_fixtures()
    if fx is not None:
        clips = torch.load(fx / "ftcn_parity_io.pt", map_location="cpu", weights_only=True)["clips_uint8_NTHWC"]
    else:
        g = torch.Generator().manual_seed(20211017)
        low = torch.rand(2, 3, 8, 14, 14, generator=g) * 255
        up = torch.nn.functional.interpolate(low, size=(32, 224, 224), mode="trilinear", align_corners=False)
        noise = torch.randn(up.shape, generator=g) * 12
        clips = (up + noise).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1)
    idx = torch.arange(batch) % clips.shape[0]
    return normalize_clips(clips[idx])


def retinaface_parity_images(batch: int = 1, hw: tuple[int, int] = (640, 640)) -> torch.Tensor:
    """Preprocessed detector input (batch,3,H,W): fixture photos resized to `hw`, or seeded noise."""
    from ftcn.retinaface_net import MEAN_RGB_ORDER

    fx = shared_fixtures()
    frames = []
    if fx is not None:
        import cv2

        for p in sorted((fx / "images").glob("*")):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None:
                frames.append(torch.from_numpy(cv2.resize(img[:, :, ::-1], (hw[1], hw[0])).copy()))
    if not frames:
        g = torch.Generator().manual_seed(7)
        frames = [torch.randint(0, 256, (*hw, 3), generator=g, dtype=torch.uint8) for _ in range(2)]
    x = torch.stack([frames[i % len(frames)] for i in range(batch)]).float()
    return (x - torch.tensor(MEAN_RGB_ORDER)).permute(0, 3, 1, 2).contiguous()


def parity_inputs(network: str, batch: int = 1, hw: tuple[int, int] = (640, 640)) -> torch.Tensor:
    return ftcn_parity_clips(batch) if network == "ftcn" else retinaface_parity_images(batch, hw)


def max_abs_diff(a: torch.Tensor | tuple, b: torch.Tensor | tuple) -> float:
    """Largest absolute difference over one output or a tuple of outputs."""
    if isinstance(a, torch.Tensor):
        a, b = (a,), (b,)
    return max((x.float().cpu() - y.float().cpu()).abs().max().item() for x, y in zip(a, b))
