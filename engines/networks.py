"""Building the reference torch networks (FTCN+TT, RetinaFace) and inference-optimised copies."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ftcn.model import FTCN


def load_reference(network: str, model_path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The plain float32 eval-mode network, loaded strictly (WeightsError on any mismatch)."""
    if network == "ftcn":
        from ftcn.checkpoint import load_ftcn

        return load_ftcn(model_path, device)
    if network == "retinaface":
        from ftcn.detector import load_network

        return load_network(model_path, device)
    raise ValueError(f"unknown network {network!r}")


def fold_conv_bn_sequentials(model: nn.Module) -> nn.Module:
    """Copy of `model` where every Conv2d directly followed by a BatchNorm2d inside an nn.Sequential
    is replaced by one Conv2d with bias (the BN becomes Identity). Used for RetinaFace."""
    model = copy.deepcopy(model).eval()
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return model


class ProbOnly(nn.Module):
    """Export wrapper: FTCN-like module -> probability only (graph output `prob`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def is_ftcn_like(model: nn.Module) -> bool:
    return isinstance(model, FTCN) or hasattr(model, "forward_logit")
