"""FTCN+TT in plain PyTorch: fully temporal I3D ResNet-50 (cut after res4) + temporal transformer.

The module tree mirrors the official network (SlowFast naming, vit-pytorch head) only so that the
official checkpoint `ftcn_tt.pth` loads strictly by key; the layout is documented in
`../shared/fixtures/architecture.md`. No convolution has a spatial kernel: every conv is (kt,1,1)
or (1,1,1), spatial interaction only comes from max-pools and the final average pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

# ImageNet statistics scaled by 255 (the network sees raw 0..255 pixels minus these), RGB order.
NORM_MEAN: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
NORM_STD: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)

CLIP_SIZE = 32
IMSIZE = 224
# Widths, inner widths, block counts and temporal kernel sizes of res2..res4 (I3D ResNet-50).
_STAGES: tuple[tuple[int, int, int, tuple[int, ...]], ...] = (
    (256, 64, 3, (3, 3, 3)),
    (512, 128, 4, (3, 1, 3, 1)),
    (1024, 256, 6, (3, 1, 3, 1, 3, 1)),
)


def normalize_clips(clips: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (N,T,H,W,3) RGB clips -> float32 (N,3,T,H,W) network input, on the clips' device.

    Same arithmetic as the reference (cast, subtract the x255 mean, divide by the x255 std) so the
    result is bit-identical to the fixture's input.
    """
    if isinstance(clips, np.ndarray):
        clips = torch.from_numpy(np.ascontiguousarray(clips))
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"expected clips of shape (N,T,H,W,3), got {tuple(clips.shape)}")
    mean = torch.tensor(NORM_MEAN, dtype=torch.float32, device=clips.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(NORM_STD, dtype=torch.float32, device=clips.device).view(1, 3, 1, 1, 1)
    return (clips.permute(0, 4, 1, 2, 3).float() - mean) / std


def _bn(channels: int, pool: bool) -> nn.Module:
    """BatchNorm, followed by the (1,2,2) max-pool that replaces a removed spatial stride."""
    bn = nn.BatchNorm3d(channels, eps=1e-5)
    if pool:
        return nn.Sequential(bn, nn.MaxPool3d((1, 2, 2), (1, 2, 2)))
    return bn


def _conv(cin: int, cout: int, kt: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)


class Stem(nn.Module):
    """conv (5,1,1) -> BN -> pool (1,2,2) -> ReLU -> max-pool (1,3,3)/(1,2,2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(3, 64, 5)
        self.bn = _bn(64, pool=True)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class Bottleneck(nn.Module):
    """a (kt,1,1) -> BN -> ReLU -> b (1,1,1) -> BN [-> pool] -> ReLU -> c (1,1,1) -> BN."""

    def __init__(self, cin: int, inner: int, cout: int, kt: int, pool: bool) -> None:
        super().__init__()
        self.a = _conv(cin, inner, kt)
        self.a_bn = _bn(inner, pool=False)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = _conv(inner, inner)
        self.b_bn = _bn(inner, pool=pool)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = _conv(inner, cout)
        self.c_bn = _bn(cout, pool=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class ResBlock(nn.Module):
    """Residual block; the first block of a stage has a projection shortcut (branch1)."""

    def __init__(self, cin: int, inner: int, cout: int, kt: int, first: bool, pool: bool) -> None:
        super().__init__()
        self.has_branch1 = first
        if first:
            self.branch1 = _conv(cin, cout)
            self.branch1_bn = _bn(cout, pool=pool)
        self.branch2 = Bottleneck(cin, inner, cout, kt, pool)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.branch1_bn(self.branch1(x)) if self.has_branch1 else x
        return self.relu(shortcut + self.branch2(x))


class Stage(nn.Module):
    """A run of ResBlocks named `pathway0_res{i}` as in SlowFast."""

    def __init__(self, cin: int, inner: int, cout: int, kernels: Sequence[int], downsample: bool) -> None:
        super().__init__()
        self.num_blocks = len(kernels)
        for i, kt in enumerate(kernels):
            block = ResBlock(
                cin if i == 0 else cout, inner, cout, kt, first=i == 0, pool=downsample and i == 0
            )
            self.add_module(f"pathway0_res{i}", block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_blocks):
            x = getattr(self, f"pathway0_res{i}")(x)
        return x


class S1(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pathway0_stem = Stem()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pathway0_stem(x)


class Attention(nn.Module):
    """Multi-head self-attention, 16 heads x 64, no mask (vit-pytorch layout)."""

    def __init__(self, dim: int = 1024, heads: int = 16, dim_head: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.to_qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (b, heads, n, dim_head)
        attn = (torch.matmul(q, k.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int = 1024, hidden: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class Transformer(nn.Module):
    def __init__(self, dim: int = 1024, depth: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Residual(PreNorm(dim, Attention(dim))), Residual(PreNorm(dim, FeedForward(dim)))])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = ff(attn(x))
        return x


class TimeTransformer(nn.Module):
    """Class token + position embedding over the 16 time tokens, one pre-norm layer, LN + linear."""

    def __init__(self, dim: int = 1024, num_tokens: int = CLIP_SIZE // 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, num_tokens + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(dropout)
        self.transformer = Transformer(dim, depth=1)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim, eps=1e-5), nn.Linear(dim, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        x = self.dropout(x + self.pos_embedding[:, : n + 1])
        x = self.transformer(x)
        return self.mlp_head(x[:, 0])


class TransformerHead(nn.Module):
    """(1,14,14) average pool -> one token per time step -> transformer -> logit (no sigmoid here)."""

    def __init__(self) -> None:
        super().__init__()
        self.avgpool = nn.AvgPool3d((1, IMSIZE // 16, IMSIZE // 16), stride=1)
        self.time_T = TimeTransformer()

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(x)  # N,1024,16,1,1
        return x.flatten(2).transpose(1, 2)  # N,16,1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.time_T(self.tokens(x))


class FullyTemporalResNet(nn.Module):
    """I3D ResNet-50 with spatial kernels and strides removed, res5 dropped, transformer head."""

    def __init__(self) -> None:
        super().__init__()
        self.s1 = S1()
        cin = 64
        for idx, (cout, inner, _, kernels) in enumerate(_STAGES):
            self.add_module(f"s{idx + 2}", Stage(cin, inner, cout, kernels, downsample=idx > 0))
            cin = cout
        self.pathway0_pool = nn.MaxPool3d((2, 1, 1), (2, 1, 1))
        self.head = TransformerHead()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output N x 1024 x 16 x 14 x 14."""
        x = self.s2(self.s1(x))
        x = self.pathway0_pool(x)
        return self.s4(self.s3(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FTCN(nn.Module):
    """FTCN+TT. `forward` returns the probability of "fake" (sigmoid inside, as the official head).

    State-dict keys equal the official checkpoint's keys without the `module.` prefix.
    """

    def __init__(self) -> None:
        super().__init__()
        self.resnet = FullyTemporalResNet()

    @staticmethod
    def check_input(x: torch.Tensor) -> None:
        if x.ndim != 5 or tuple(x.shape[1:]) != (3, CLIP_SIZE, IMSIZE, IMSIZE):
            raise ValueError(
                f"FTCN expects N x 3 x {CLIP_SIZE} x {IMSIZE} x {IMSIZE} input, got {tuple(x.shape)}"
            )

    def forward_logit(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,32,224,224) normalised float -> (N,1) pre-sigmoid logit (for BCEWithLogitsLoss)."""
        self.check_input(x)
        return self.resnet(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,32,224,224) normalised float -> (N,1) probability in (0,1)."""
        return torch.sigmoid(self.forward_logit(x))
