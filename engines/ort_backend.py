"""ONNX Runtime backend: CPU or CUDA execution provider on the exported dynamic-batch graph.

On CUDA the inputs and outputs are torch tensors bound by pointer (IOBinding) and ORT runs on
torch's current stream, so nothing is copied through the host.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.base import IO_NAMES, Engine, EngineOptions, Outputs
from engines.onnx_export import export_onnx

log = logging.getLogger("ftcn.engines")


def retinaface_anchors(h: int, w: int) -> int:
    """Anchor count for an input size (2 anchors per cell at strides 8, 16, 32)."""
    return 2 * sum(math.ceil(h / s) * math.ceil(w / s) for s in (8, 16, 32))


class OrtEngine(Engine):
    backend = "onnxruntime"

    def __init__(
        self,
        network: str,
        model_path: str | Path,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        max_batch: int = 32,
        options: EngineOptions | None = None,
        reference: nn.Module | None = None,
        onnx_file: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        opts = options or EngineOptions()
        dev = torch.device(device)
        if precision != "fp32":
            log.warning("engine: onnxruntime runs the fp32 graph (%s requested)", precision)
            precision = "fp32"
        super().__init__(network, precision, dev, max_batch)
        self.onnx_file = Path(onnx_file) if onnx_file else export_onnx(
            network, model_path, cache=opts.cache_dir, reference=reference, sample_hw=opts.retinaface_hw
        )
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: torch stages share these cores in the same process.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if opts.ort_threads:
            so.intra_op_num_threads = int(opts.ort_threads)
        if dev.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
            cuda_opts = {
                "device_id": dev.index or 0,
                "user_compute_stream": str(torch.cuda.current_stream(dev).cuda_stream),
            }
            providers: list = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.onnx_file), so, providers=providers)
        self.input_names, self.output_names = IO_NAMES[network]

    def _output_shapes(self, x: torch.Tensor) -> list[tuple[int, ...]]:
        n = x.shape[0]
        if self.network == "ftcn":
            return [(n, 1)]
        p = retinaface_anchors(int(x.shape[2]), int(x.shape[3]))
        return [(n, p, 4), (n, p, 2), (n, p, 10)]

    def _run(self, batch: torch.Tensor) -> Outputs:
        if self.device.type == "cuda":
            x = batch.contiguous()
            outs = [torch.empty(s, device=self.device, dtype=torch.float32) for s in self._output_shapes(x)]
            binding = self.session.io_binding()
            idx = self.device.index or 0
            binding.bind_input(self.input_names[0], "cuda", idx, np.float32, tuple(x.shape), x.data_ptr())
            for name, t in zip(self.output_names, outs):
                binding.bind_output(name, "cuda", idx, np.float32, tuple(t.shape), t.data_ptr())
            self.session.run_with_iobinding(binding)
        else:
            feed = {self.input_names[0]: batch.detach().cpu().contiguous().numpy()}
            outs = [torch.from_numpy(o) for o in self.session.run(list(self.output_names), feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)
