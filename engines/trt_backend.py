"""TensorRT 10 backend: FP16 engine built from the ONNX export, cached, bound to torch CUDA tensors.

Build: ONNX parser -> builder config (FP16/BF16 flag, one optimisation profile min/opt/max batch,
workspace limit, persistent timing cache) -> serialized engine. Before an engine is cached it is run
on the parity input and compared with the float32 torch model; an engine off by more than the
tolerance (1e-2 by default) is refused. Cache key: weights sha256, TensorRT version, GPU name,
precision and profile.

Runtime: torch owns the CUDA context and memory. Inputs/outputs are torch tensors whose pointers are
given to the execution context by tensor name, and `execute_async_v3` runs on torch's current
stream, so no pycuda/cuda-python and no host copies are needed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.base import IO_NAMES, Engine, EngineOptions, Outputs
from engines.cache import cache_dir, key_digest, weights_sha256, write_atomic
from engines.networks import load_reference
from engines.onnx_export import export_onnx
from engines.parity import max_abs_diff, parity_inputs
from ftcn.errors import WeightsError

log = logging.getLogger("ftcn.engines")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError("tensorrt not installed") from exc
    return trt


class _Logger:
    """One shared TensorRT logger (TensorRT wants a single instance per process)."""

    instance: Any = None

    @classmethod
    def get(cls, trt: Any) -> Any:
        if cls.instance is None:
            cls.instance = trt.Logger(trt.Logger.WARNING)
        return cls.instance


def profile_shapes(network: str, opts: EngineOptions, max_batch: int) -> dict[str, list[tuple[int, ...]]]:
    """min/opt/max input shape per input name."""
    opt_b = min(opts.opt_batch or max_batch, max_batch)
    item = (3, 32, 224, 224) if network == "ftcn" else (3, *opts.retinaface_hw)
    name = IO_NAMES[network][0][0]
    return {name: [(max(1, opts.min_batch), *item), (opt_b, *item), (max_batch, *item)]}


def engine_key(network: str, model_path: str | Path, precision: str, profile: dict, trt: Any) -> dict:
    return {
        "network": network,
        "weights_sha256": weights_sha256(model_path),
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "precision": precision,
        "profile": {k: [list(s) for s in v] for k, v in profile.items()},
    }


def build_serialized(onnx_file: Path, precision: str, profile: dict, opts: EngineOptions, timing_cache: Path,
                     trt: Any) -> bytes:
    """Parse the ONNX file and build a serialized engine; updates the timing cache file."""
    logger = _Logger.get(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    prof = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profile.items():
        prof.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(prof)
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


_TORCH_DTYPES: dict[str, torch.dtype] = {
    "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
    "INT64": torch.int64, "INT8": torch.int8, "BOOL": torch.bool, "UINT8": torch.uint8,
}


class TrtEngine(Engine):
    backend = "tensorrt"

    def __init__(
        self,
        network: str,
        model_path: str | Path,
        precision: str = "fp16",
        device: str | torch.device = "cuda",
        max_batch: int = 32,
        options: EngineOptions | None = None,
        reference: nn.Module | None = None,
        rebuild: bool = False,
    ) -> None:
        trt = import_tensorrt()
        dev = torch.device(device)
        if dev.type != "cuda" or not torch.cuda.is_available():
            raise RuntimeError("TensorRT needs a CUDA device")
        super().__init__(network, precision, dev, max_batch)
        opts = options or EngineOptions()
        self.trt = trt
        with torch.cuda.device(dev):
            self.profile = profile_shapes(network, opts, max_batch)
            key = engine_key(network, model_path, precision, self.profile, trt)
            root = cache_dir(opts.cache_dir)
            self.engine_file = root / f"{network}-{key_digest(key)}.engine"
            if self.engine_file.is_file() and not rebuild:
                self._deserialize(self.engine_file.read_bytes())
                log.info("engine: loaded cached TensorRT engine %s", self.engine_file)
            else:
                self._build(model_path, opts, key, root, reference)

    def _deserialize(self, blob: bytes) -> None:
        runtime = self.trt.Runtime(_Logger.get(self.trt))
        self.engine = runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.engine_file}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in IO_NAMES[self.network][1] if n in names]
        self.dtypes = {n: _TORCH_DTYPES[self.engine.get_tensor_dtype(n).name] for n in names}

    def _build(self, model_path: str | Path, opts: EngineOptions, key: dict, root: Path,
               reference: nn.Module | None) -> None:
        ref = reference if reference is not None else load_reference(self.network, model_path, "cpu")
        onnx_file = export_onnx(self.network, model_path, cache=opts.cache_dir, reference=ref,
                                sample_hw=opts.retinaface_hw)
        log.info("engine: building TensorRT %s engine for %s (profile %s); this takes minutes",
                 self.precision, self.network, self.profile)
        blob = build_serialized(onnx_file, self.precision, self.profile, opts, root / "timing.cache", self.trt)
        self._deserialize(blob)
        x = parity_inputs(self.network, min(2, self.max_batch), opts.retinaface_hw).to(self.device)
        with torch.inference_mode():
            expected = ref.to(self.device).eval()(x)
        ref.cpu()
        err = max_abs_diff(self._run(x), expected)
        self.parity_error = err
        if err > opts.parity_tolerance:
            raise WeightsError(
                f"TensorRT {self.precision} engine for {self.network} differs from torch by {err:.3g} "
                f"(> {opts.parity_tolerance}); not cached"
            )
        write_atomic(self.engine_file, blob)
        write_atomic(self.engine_file.with_suffix(".json"),
                     json.dumps({**key, "parity_max_abs_diff": err}, indent=2).encode())
        log.info("engine: cached %s (parity max abs diff %.2e)", self.engine_file, err)

    def _run(self, batch: torch.Tensor) -> Outputs:
        stream = torch.cuda.current_stream(self.device)
        name = self.inputs[0]
        x = batch.to(self.dtypes[name]).contiguous()
        self.context.set_input_shape(name, tuple(x.shape))
        self.context.set_tensor_address(name, x.data_ptr())
        outs = []
        for out_name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(out_name))
            t = torch.empty(shape, dtype=self.dtypes[out_name], device=self.device)
            self.context.set_tensor_address(out_name, t.data_ptr())
            outs.append(t)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        outs = [o.float() for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)
