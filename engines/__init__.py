"""Inference engines for FTCN+TT and RetinaFace behind one interface (see docs/engines.md).

    import engines
    engine = engines.load(model_path, network="ftcn", backend="tensorrt", precision="fp16",
                          device="cuda", max_batch=32, cfg=cfg)
    probs = engine.infer(clips)     # (N,3,32,224,224) normalised -> (N,1) probabilities

Names are imported lazily so that `ftcn-stream --help` does not pay for importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BACKENDS", "NETWORKS", "PRECISIONS", "Engine", "EngineOptions", "load", "fallback_chain"]

_SOURCES = {
    "load": "engines.loader",
    "fallback_chain": "engines.loader",
    "BACKENDS": "engines.base",
    "NETWORKS": "engines.base",
    "PRECISIONS": "engines.base",
    "Engine": "engines.base",
    "EngineOptions": "engines.base",
}


def __getattr__(name: str) -> Any:
    if name in _SOURCES:
        import importlib

        return getattr(importlib.import_module(_SOURCES[name]), name)
    raise AttributeError(f"module 'engines' has no attribute {name!r}")
