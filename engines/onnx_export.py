"""ONNX export with a dynamic batch axis for FTCN+TT and RetinaFace (TorchScript exporter, opset 17).

FTCN is exported from the BN-folded module (conv3d form), so the graph is the same maths as the
torch backend and small; RetinaFace also has dynamic height and width.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from engines.base import IO_NAMES
from engines.cache import cache_dir, key_digest, weights_sha256
from engines.folded import FoldedFTCN
from engines.networks import fold_conv_bn_sequentials, load_reference

log = logging.getLogger("ftcn.engines")

OPSET = 17
EXPORT_VERSION = 1  # bump when the exported graph changes


def export_module(
    network: str, module: nn.Module, out_path: str | Path, sample_hw: tuple[int, int] = (640, 640)
) -> Path:
    """Export `module` (eval, float32, CPU) to `out_path`; returns the path."""
    inputs, outputs = IO_NAMES[network]
    if network == "ftcn":
        sample = torch.zeros(1, 3, 32, 224, 224)
        axes = {inputs[0]: {0: "batch"}, outputs[0]: {0: "batch"}}
    else:
        sample = torch.zeros(1, 3, *sample_hw)
        axes = {inputs[0]: {0: "batch", 2: "height", 3: "width"}}
        axes.update({name: {0: "batch", 1: "anchors"} for name in outputs})
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer notes
        torch.onnx.export(
            module.eval(),
            (sample,),
            str(tmp),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    tmp.replace(out)
    return out


def export_module_for(network: str, reference: nn.Module) -> nn.Module:
    """The module that goes into the ONNX graph: BN folded (conv3d form for FTCN)."""
    if network == "ftcn":
        return FoldedFTCN(reference.cpu().eval(), "conv3d")
    return fold_conv_bn_sequentials(reference.cpu().eval())


def onnx_path(network: str, model_path: str | Path, cache: str | Path | None = None) -> Path:
    key = {"network": network, "weights_sha256": weights_sha256(model_path), "opset": OPSET,
           "export_version": EXPORT_VERSION, "torch": torch.__version__.split("+")[0]}
    return cache_dir(cache) / f"{network}-{key_digest(key)}.onnx"


def export_onnx(
    network: str,
    model_path: str | Path,
    out_path: str | Path | None = None,
    *,
    cache: str | Path | None = None,
    reference: nn.Module | None = None,
    force: bool = False,
    sample_hw: tuple[int, int] = (640, 640),
) -> Path:
    """Export `network` with the weights at `model_path`; reuses a cached export unless `force`."""
    out = Path(out_path) if out_path else onnx_path(network, model_path, cache)
    if out.is_file() and not force:
        return out
    ref = reference if reference is not None else load_reference(network, model_path, "cpu")
    log.info("engine: exporting %s to ONNX: %s", network, out)
    return export_module(network, export_module_for(network, ref), out, sample_hw)
