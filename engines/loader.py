"""`engines.load`: pick a backend along tensorrt -> onnxruntime -> torch and start it.

Inference engines for FTCN+TT and RetinaFace behind one interface.

    engine = engines.load(model_path, network="ftcn", backend="tensorrt", precision="fp16",
                          device="cuda", max_batch=32, cfg=cfg)
    probs = engine.infer(clips)          # (N,3,32,224,224) normalised -> (N,1) probabilities

Backends: `tensorrt` (TensorRT 10, CUDA), `onnxruntime` (CPU or CUDA EP), `torch` (BN folded,
fp16/bf16, optional torch.compile / CUDA graphs). A backend that cannot start falls back along
tensorrt -> onnxruntime -> torch; the choice and the reason are logged once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.base import BACKENDS, NETWORKS, PRECISIONS, Engine, EngineOptions
from ftcn.errors import ConfigError, WeightsError

log = logging.getLogger("ftcn.engines")
_logged: set[tuple[str, ...]] = set()


def fallback_chain(backend: str) -> list[str]:
    """The requested backend followed by the ones after it in tensorrt -> onnxruntime -> torch."""
    if backend == "auto":
        backend = "tensorrt"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown engine backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    return list(BACKENDS[BACKENDS.index(backend) :])


def _make(backend: str, network: str, model_path: str | Path, precision: str, device: torch.device,
          max_batch: int, opts: EngineOptions, reference: nn.Module | None) -> Engine:
    if backend == "tensorrt":
        from engines.trt_backend import TrtEngine

        return TrtEngine(network, model_path, precision, device, max_batch, opts, reference)
    if backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("onnxruntime not installed") from exc
        from engines.ort_backend import OrtEngine

        return OrtEngine(network, model_path, precision, device, max_batch, opts, reference)
    from engines.torch_backend import TorchEngine

    return TorchEngine(network, model_path, precision, device, max_batch, opts, reference)


def _log_once(*parts: str, level: int = logging.INFO, msg: str) -> None:
    if parts not in _logged:
        _logged.add(parts)
        log.log(level, msg)


def load(
    model_path: str | Path,
    network: str = "ftcn",
    backend: str = "torch",
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    max_batch: int = 32,
    cfg: dict[str, Any] | None = None,
    *,
    fallback: bool = True,
    reference: nn.Module | None = None,
    **options: Any,
) -> Engine:
    """Load `network` with the weights at `model_path` on the first backend of the fallback chain that starts.

    `cfg` is the full config (its `engine` section fills EngineOptions); keyword `options` override it.
    `reference` may pass an already loaded float32 torch network to avoid reading the weights twice.
    Weight errors (missing/mismatched files) are raised at once, never hidden by a fallback.
    """
    if network not in NETWORKS:
        raise ConfigError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if not Path(model_path).is_file():
        raise WeightsError(f"{network} weights not found: {model_path} (run `ftcn-stream weights fetch`)")
    dev = torch.device(device)
    opts = EngineOptions.from_config(cfg, **options)
    chain = fallback_chain(backend) if fallback else [backend]
    reasons: list[str] = []
    for name in chain:
        try:
            engine = _make(name, network, model_path, precision, dev, max_batch, opts, reference)
        except WeightsError:
            raise
        except Exception as exc:  # noqa: BLE001 - any start-up failure moves on to the next backend
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            reasons.append(f"{name}: {reason}")
            if name == chain[-1]:
                raise
            continue
        why = f" (fallback: {'; '.join(reasons)})" if reasons else ""
        engine.fallback_reason = "; ".join(reasons) or None
        _log_once(network, backend, name, str(dev), level=logging.WARNING if reasons else logging.INFO,
                  msg=f"engine: {engine.describe()} via {name}{why}")
        return engine
    raise AssertionError("unreachable")
