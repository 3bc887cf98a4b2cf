"""Inference-only FTCN+TT with BatchNorm folded into the convolutions and a choice of conv kernels.

Every FTCN convolution has a 1x1 spatial kernel, so the same maths can run as
  * `conv3d`      : F.conv3d on contiguous N,C,T,H,W (what the core model does);
  * `conv3d_cl`   : F.conv3d on channels_last_3d memory (oneDNN / cuDNN NDHWC kernels);
  * `conv2d`      : F.conv2d with a (kt,1) kernel on N,C,T,H*W;
  * `matmul`      : F.linear over channels on channels-last memory, one GEMM per temporal tap.
All four give the same numbers up to float rounding; `docs/engines.md` lists which is fastest where.
Activations always keep the logical N,C,T,H,W shape, only their memory layout differs, so pooling,
residual adds and the head are shared by all variants.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ftcn.model import FTCN, IMSIZE, Bottleneck, ResBlock, Stage, TimeTransformer

CONV_IMPLS = ("conv3d", "conv3d_cl", "conv2d", "matmul")
CHANNELS_LAST_IMPLS = ("conv3d_cl", "matmul")


def fold_bn(conv_weight: torch.Tensor, bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv (no bias) followed by eval BatchNorm -> one conv weight and bias (computed in float64)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv_weight.double() * scale.view(-1, *([1] * (conv_weight.dim() - 1)))
    bias = bn.bias.double() - bn.running_mean.double() * scale
    return weight.float(), bias.float()


def _bn_of(module: nn.Module) -> tuple[nn.BatchNorm3d, bool]:
    """The BatchNorm inside `_bn(...)` and whether a (1,2,2) max-pool follows it."""
    if isinstance(module, nn.Sequential):
        return module[0], True
    assert isinstance(module, nn.BatchNorm3d)
    return module, False


class FoldedConv(nn.Module):
    """A (kt,1,1) convolution with bias (BN folded in), run by the selected implementation."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, impl: str) -> None:
        super().__init__()
        if impl not in CONV_IMPLS:
            raise ValueError(f"unknown conv implementation {impl!r}; choose from {CONV_IMPLS}")
        self.impl = impl
        self.kt = int(weight.shape[2])
        self.pad = self.kt // 2
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl in ("conv3d", "conv3d_cl"):
            return F.conv3d(x, self.weight, self.bias, padding=(self.pad, 0, 0))
        n, _, t, h, w = x.shape
        if self.impl == "conv2d":
            y = F.conv2d(x.reshape(n, x.shape[1], t, h * w), self.weight.squeeze(-1), self.bias, padding=(self.pad, 0))
            return y.view(n, -1, t, h, w)
        # matmul: channels-last memory, so permute(0,2,3,4,1) is a free view of N,T,H,W,C.
        xc = x.permute(0, 2, 3, 4, 1)
        y = F.linear(xc, self.weight[:, :, self.pad, 0, 0], self.bias)
        for k in range(self.kt):
            s = k - self.pad  # output time t reads input time t + s
            if s == 0:
                continue
            wk = self.weight[:, :, k, 0, 0]
            if s < 0:
                y[:, -s:] += F.linear(xc[:, :s], wk)
            else:
                y[:, :-s] += F.linear(xc[:, s:], wk)
        return y.permute(0, 4, 1, 2, 3)


def _pool2(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool3d(x, (1, 2, 2), (1, 2, 2))


class FoldedBlock(nn.Module):
    def __init__(self, block: ResBlock, impl: str) -> None:
        super().__init__()
        b: Bottleneck = block.branch2
        self.a = FoldedConv(*fold_bn(b.a.weight, _bn_of(b.a_bn)[0]), impl)
        bn_b, self.pool = _bn_of(b.b_bn)
        self.b = FoldedConv(*fold_bn(b.b.weight, bn_b), impl)
        self.c = FoldedConv(*fold_bn(b.c.weight, _bn_of(b.c_bn)[0]), impl)
        self.shortcut: FoldedConv | None = None
        if block.has_branch1:
            self.shortcut = FoldedConv(*fold_bn(block.branch1.weight, _bn_of(block.branch1_bn)[0]), impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a(x))
        y = self.b(y)
        if self.pool:
            y = _pool2(y)
        y = self.c(F.relu(y))
        if self.shortcut is None:
            s = x
        else:
            s = self.shortcut(x)
            if self.pool:
                s = _pool2(s)
        return F.relu(y + s)


class FoldedFTCN(nn.Module):
    """FTCN+TT for inference: BN folded, same `forward` (probability) and `forward_logit` as FTCN."""

    def __init__(self, model: FTCN, impl: str = "conv3d") -> None:
        super().__init__()
        if model.training:
            raise ValueError("fold an eval-mode model (BatchNorm running statistics are folded)")
        net = model.resnet
        stem = net.s1.pathway0_stem
        self.impl = impl
        self.stem = FoldedConv(*fold_bn(stem.conv.weight, _bn_of(stem.bn)[0]), impl)
        blocks: list[nn.Module] = []
        for stage in (net.s2, net.s3, net.s4):
            assert isinstance(stage, Stage)
            blocks.append(nn.Sequential(*(FoldedBlock(getattr(stage, f"pathway0_res{i}"), impl)
                                          for i in range(stage.num_blocks))))
        self.s2, self.s3, self.s4 = blocks
        head: TimeTransformer = copy.deepcopy(net.head.time_T)
        self.time_T = head.eval()
        self.requires_grad_(False)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone + (1,14,14) average pool -> N x 16 x 1024 time tokens."""
        FTCN.check_input(x)
        if self.impl in CHANNELS_LAST_IMPLS:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = _pool2(self.stem(x))
        x = F.max_pool3d(F.relu(x), (1, 3, 3), (1, 2, 2), (0, 1, 1))
        x = self.s2(x)
        x = F.max_pool3d(x, (2, 1, 1), (2, 1, 1))
        x = self.s4(self.s3(x))
        return F.avg_pool3d(x, (1, IMSIZE // 16, IMSIZE // 16)).flatten(2).transpose(1, 2)

    def forward_logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.time_T(self.tokens(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logit(x))
