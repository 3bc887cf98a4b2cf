"""torch backend: BN folded, fastest conv form, fp16/bf16, optional torch.compile and CUDA graphs."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from engines.base import Engine, EngineOptions, Outputs
from engines.folded import FoldedFTCN
from engines.networks import fold_conv_bn_sequentials, load_reference

log = logging.getLogger("ftcn.engines")

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def default_conv_impl(device: torch.device) -> str:
    """Measured defaults (docs/engines.md): NDHWC conv3d on CPU (oneDNN), GEMMs on channels-last on CUDA."""
    return "matmul" if device.type == "cuda" else "conv3d_cl"


def buckets(max_batch: int) -> list[int]:
    """Batch sizes that get their own CUDA graph: powers of two up to max_batch, plus max_batch."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return [*out, max_batch]


class TorchEngine(Engine):
    backend = "torch"

    def __init__(
        self,
        network: str,
        model_path: str | Path,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        max_batch: int = 32,
        options: EngineOptions | None = None,
        reference: nn.Module | None = None,
    ) -> None:
        dev = torch.device(device)
        opts = options or EngineOptions()
        if precision != "fp32" and dev.type != "cuda":
            log.warning("engine: %s precision needs CUDA; the torch backend on %s runs fp32", precision, dev)
            precision = "fp32"
        super().__init__(network, precision, dev, max_batch)
        ref = reference if reference is not None else load_reference(network, model_path, "cpu")
        if network == "ftcn":
            self.conv_impl = opts.conv_impl if opts.conv_impl != "auto" else default_conv_impl(dev)
            module: nn.Module = FoldedFTCN(ref.cpu().eval(), self.conv_impl)
        else:
            self.conv_impl = "conv2d"
            module = fold_conv_bn_sequentials(ref.cpu().eval())
        self.dtype = _DTYPES[precision]
        self.module = module.to(dev, self.dtype).eval().requires_grad_(False)
        self._fn = self.module
        if opts.compile:
            self._fn = torch.compile(self.module, dynamic=False)
        self.use_graphs = bool(opts.cuda_graphs)
        if self.use_graphs and dev.type != "cuda":
            log.warning("engine: CUDA graphs need a CUDA device; disabled on %s", dev)
            self.use_graphs = False
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, Outputs]] = {}

    def _forward(self, x: torch.Tensor) -> Outputs:
        out = self._fn(x.to(self.dtype))
        if isinstance(out, tuple):
            return tuple(o.float() for o in out)
        return out.float()

    def _graph_for(self, shape: tuple[int, ...]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, Outputs]:
        entry = self._graphs.get(shape)
        if entry is None:
            static_in = torch.zeros(shape, device=self.device, dtype=torch.float32)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(2):  # warm-up (and compile) outside the capture
                    self._forward(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = self._forward(static_in)
            entry = self._graphs[shape] = (graph, static_in, static_out)
        return entry

    def _run(self, batch: torch.Tensor) -> Outputs:
        if not self.use_graphs:
            with torch.inference_mode():
                return self._forward(batch)
        n = batch.shape[0]
        bucket = next(b for b in buckets(self.max_batch) if b >= n)
        graph, static_in, static_out = self._graph_for((bucket, *batch.shape[1:]))
        static_in[:n].copy_(batch)
        if n < bucket:
            static_in[n:].zero_()
        graph.replay()
        if isinstance(static_out, tuple):
            return tuple(o[:n].clone() for o in static_out)
        return static_out[:n].clone()
