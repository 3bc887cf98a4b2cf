"""`build_engines.py` / `ftcn-stream build-engines`: export ONNX, build engines, print parity + throughput."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ftcn.errors import ConfigError

log = logging.getLogger("ftcn.engines")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", action="append", choices=("tensorrt", "onnxruntime", "torch"),
                   help="backend to build and measure; repeatable (default: all three)")
    p.add_argument("--network", action="append", choices=("ftcn", "retinaface"),
                   help="network; repeatable (default: both)")
    p.add_argument("--config", metavar="FILE", help="YAML config (engine, weights, model, detector sections)")
    p.add_argument("--ftcn-weights", metavar="PATH", help="FTCN+TT checkpoint (default: from config/cache)")
    p.add_argument("--retinaface-weights", metavar="PATH", help="RetinaFace weights (default: from config/cache)")
    p.add_argument("--weights-dir", metavar="DIR", help="weights cache directory")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"),
                   help="default: fp16 on CUDA, fp32 on CPU (onnxruntime always runs fp32)")
    p.add_argument("--batch-sizes", default="1", help="comma-separated batch sizes to measure (default: 1)")
    p.add_argument("--max-batch", type=int, help="engine max batch / TensorRT profile max (default: largest size)")
    p.add_argument("--opt-batch", type=int, help="TensorRT profile opt batch (default: max batch)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per batch size (median; default 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per batch size (default 1)")
    p.add_argument("--retinaface-size", default="640x640", metavar="HxW",
                   help="RetinaFace input size for the TensorRT profile and the benchmark (default 640x640)")
    p.add_argument("--cache-dir", metavar="DIR", help="engine/ONNX cache (default: $FTCN_ENGINE_DIR or XDG cache)")
    p.add_argument("--conv-impl", choices=("auto", "conv3d", "conv3d_cl", "conv2d", "matmul"),
                   help="torch backend conv form for FTCN (default auto)")
    p.add_argument("--compile", action="store_true", help="torch backend: torch.compile")
    p.add_argument("--cuda-graphs", action="store_true", help="torch backend: CUDA graph per batch bucket")
    p.add_argument("--rebuild", action="store_true", help="TensorRT: rebuild even when a cached engine exists")


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--retinaface-size must look like 640x640, got {text!r}") from None
    return h, w


def run(args: argparse.Namespace) -> int:
    import torch

    from engines.bench import ReferenceOutputs, Row, format_table, measure
    from engines.loader import load
    from engines.networks import load_reference
    from engines.onnx_export import export_onnx
    from ftcn import weights as wts
    from ftcn.config import load_config, resolve_device

    cfg = load_config(args.config)
    device = torch.device(resolve_device(args.device))
    precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    sizes = sorted({int(s) for s in str(args.batch_sizes).split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise ConfigError("--batch-sizes needs positive integers")
    max_batch = args.max_batch or sizes[-1]
    hw = _hw(args.retinaface_size)
    backends = args.backend or ["tensorrt", "onnxruntime", "torch"]
    networks = args.network or ["ftcn", "retinaface"]
    paths = {
        "ftcn": Path(args.ftcn_weights) if args.ftcn_weights else wts.resolve_checkpoint(cfg, None, args.weights_dir),
        "retinaface": Path(args.retinaface_weights) if args.retinaface_weights
        else wts.resolve_detector_weights(cfg, None, args.weights_dir),
    }
    options: dict[str, Any] = {
        "cache_dir": args.cache_dir, "opt_batch": args.opt_batch, "retinaface_hw": hw,
        "conv_impl": args.conv_impl, "compile": args.compile or None, "cuda_graphs": args.cuda_graphs or None,
    }
    rows: list[Row] = []
    for network in networks:
        ref = load_reference(network, paths[network], "cpu")
        onnx_file = export_onnx(network, paths[network], cache=args.cache_dir, reference=ref, sample_hw=hw)
        print(f"{network}: ONNX {onnx_file}")
        refs = ReferenceOutputs(network, ref, hw)
        for backend in backends:
            try:
                engine = load(paths[network], network, backend, precision, device, max_batch, cfg,
                              fallback=False, reference=ref, **options)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot start is one table row
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                rows.append(Row(network, backend, precision, str(device), 0, note=f"skipped: {reason}"))
                continue
            rows.extend(measure(engine, refs, sizes, args.repeats, args.warmup))
    print(format_table(rows))
    failed = [r for r in rows if r.note.startswith("failed")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    import sys

    from ftcn.errors import FTCNError

    parser = argparse.ArgumentParser(prog="build_engines.py", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except FTCNError as exc:
        print(f"build_engines: error: {exc}", file=sys.stderr)
        return exc.exit_code
