"""RetinaFace mobilenet0.25: the network only (no decoding), laid out so the published weights load strictly.

Module names mirror the state-dict keys of `retinaface_mobilenet0.25.pth` (`body.stage1.0.0.weight`,
`fpn.output1.0.weight`, `ssh1.conv3X3.0.weight`, `ClassHead.0.conv1x1.weight`, ...), which is why some
attribute names look unusual (`conv7x7_3` next to `conv7X7_2`, capitalised head lists).

Forward contract (also what ONNX/TensorRT exports see):
    input  float32 (N, 3, H, W): the RGB frame minus the mean (104, 117, 123) per channel in array order
           (pixel values 0..255, no scaling); any H, W.
    output (loc (N, P, 4), conf (N, P, 2) softmax probabilities, column 1 = face, landms (N, P, 10)),
           P = 2 * sum over strides 8/16/32 of ceil(H/s) * ceil(W/s), anchors ordered level, row, col, size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Anchor configuration the weights were trained with (cfg_mnet of Pytorch_Retinaface / FTCN).
MIN_SIZES: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
STEPS: tuple[int, ...] = (8, 16, 32)
VARIANCES: tuple[float, float] = (0.1, 0.2)
ANCHORS_PER_CELL = 2
MEAN_RGB_ORDER: tuple[float, float, float] = (104.0, 117.0, 123.0)


def _conv_bn_act(cin: int, cout: int, k: int, stride: int, slope: float | None, groups: int = 1) -> list[nn.Module]:
    """Conv (no bias) + BatchNorm, optionally followed by LeakyReLU(slope) (slope 0 = ReLU)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if slope is not None:
        layers.append(nn.LeakyReLU(slope))
    return layers


def _full(cin: int, cout: int, stride: int = 1, slope: float | None = 0.1) -> nn.Sequential:
    return nn.Sequential(*_conv_bn_act(cin, cout, 3, stride, slope))


def _pointwise(cin: int, cout: int, slope: float) -> nn.Sequential:
    return nn.Sequential(*_conv_bn_act(cin, cout, 1, 1, slope))


def _depthwise_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNetV1 block: depthwise 3x3 then pointwise 1x1, each BN + LeakyReLU(0.1)."""
    return nn.Sequential(
        *_conv_bn_act(cin, cin, 3, stride, 0.1, groups=cin),
        *_conv_bn_act(cin, cout, 1, 1, 0.1),
    )


class MobileNetV1Body(nn.Module):
    """MobileNetV1 x0.25 trunk; returns the stride 8, 16 and 32 feature maps (64, 128, 256 channels)."""

    def __init__(self) -> None:
        super().__init__()
        dw = _depthwise_separable
        self.stage1 = nn.Sequential(
            _full(3, 8, stride=2), dw(8, 16, 1), dw(16, 32, 2), dw(32, 32, 1), dw(32, 64, 2), dw(64, 64, 1)
        )
        self.stage2 = nn.Sequential(dw(64, 128, 2), *[dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(dw(128, 256, 2), dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return c3, c4, c5


class FPN(nn.Module):
    """Top-down feature pyramid: 1x1 lateral convs, nearest upsampling, 3x3 merge convs."""

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        slope = 0.1 if out_channels <= 64 else 0.0
        self.output1 = _pointwise(in_channels[0], out_channels, slope)
        self.output2 = _pointwise(in_channels[1], out_channels, slope)
        self.output3 = _pointwise(in_channels[2], out_channels, slope)
        self.merge1 = _full(out_channels, out_channels, slope=slope)
        self.merge2 = _full(out_channels, out_channels, slope=slope)

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    """Single-stage context module: parallel 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        slope = 0.1 if channels <= 64 else 0.0
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = _full(channels, half, slope=None)
        self.conv5X5_1 = _full(channels, quarter, slope=slope)
        self.conv5X5_2 = _full(quarter, quarter, slope=None)
        self.conv7X7_2 = _full(quarter, quarter, slope=slope)
        self.conv7x7_3 = _full(quarter, quarter, slope=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(b5_1), self.conv7x7_3(self.conv7X7_2(b5_1))], dim=1)
        return F.relu(out)


class _Head(nn.Module):
    """1x1 conv predicting `values` numbers per anchor, flattened to (N, H*W*anchors, values)."""

    def __init__(self, channels: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, ANCHORS_PER_CELL * values, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFaceNet(nn.Module):
    """RetinaFace with a MobileNetV1 x0.25 body; see the module docstring for the I/O contract."""

    def __init__(self, out_channels: int = 64, softmax: bool = True) -> None:
        super().__init__()
        self.softmax = softmax
        self.body = MobileNetV1Body()
        self.fpn = FPN((64, 128, 256), out_channels)
        self.ssh1 = SSH(out_channels)
        self.ssh2 = SSH(out_channels)
        self.ssh3 = SSH(out_channels)
        self.ClassHead = nn.ModuleList([_Head(out_channels, 2) for _ in STEPS])
        self.BboxHead = nn.ModuleList([_Head(out_channels, 4) for _ in STEPS])
        self.LandmarkHead = nn.ModuleList([_Head(out_channels, 10) for _ in STEPS])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.fpn(self.body(x))
        feats = (self.ssh1(p[0]), self.ssh2(p[1]), self.ssh3(p[2]))
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        if self.softmax:
            conf = F.softmax(conf, dim=-1)
        return loc, conf, landms
