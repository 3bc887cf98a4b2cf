#!/usr/bin/env python3
"""Engine benchmark: clips/s (frames/s for RetinaFace) and ms/item per backend, precision, conv form and
batch size, with the parity error against the float32 torch model in the same table.

    python bench/engines.py --device cpu --batch-sizes 1,2 --repeats 3            # small CPU run
    python bench/engines.py --device cuda --precisions fp16,fp32 --batch-sizes 1,8,32,64 \
        --conv-impls matmul,conv3d_cl --compile --cuda-graphs                    # GPU run
Weights default to the random fixture checkpoint when $FTCN_SHARED is set (timings do not depend on
weight values), else to the configured/cached weights.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _hardware(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.startswith("cuda"):
        desc += f", GPU {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}"
    try:
        import onnxruntime

        desc += f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        pass
    return desc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default="ftcn,retinaface")
    p.add_argument("--backends", default="torch,onnxruntime,tensorrt")
    p.add_argument("--precisions", default="fp32", help="comma list of fp32, fp16, bf16")
    p.add_argument("--conv-impls", default="auto", help="torch FTCN conv forms: auto,conv3d,conv3d_cl,conv2d,matmul")
    p.add_argument("--batch-sizes", default="1")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cuda-graphs", action="store_true")
    p.add_argument("--retinaface-size", default="640x640", metavar="HxW")
    p.add_argument("--ftcn-weights")
    p.add_argument("--retinaface-weights")
    p.add_argument("--cache-dir")
    args = p.parse_args(argv)

    import logging

    import torch

    from engines.bench import ReferenceOutputs, Row, format_table, measure
    from engines.loader import load
    from engines.networks import load_reference
    from ftcn import weights as wts
    from ftcn.config import load_config, resolve_device

    logging.basicConfig(level=logging.WARNING)
    cfg = load_config()
    device = torch.device(resolve_device(args.device))
    shared = Path(os.environ.get("FTCN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    paths = {
        "ftcn": args.ftcn_weights
        or (shared / "fixtures/ftcn_random_ckpt.pt" if (shared / "fixtures").is_dir() else wts.resolve_checkpoint(cfg)),
        "retinaface": args.retinaface_weights
        or (shared / "weights/retinaface_mobilenet0.25.pth" if (shared / "weights").is_dir()
            else wts.resolve_detector_weights(cfg)),
    }
    h, w = (int(v) for v in args.retinaface_size.split("x"))
    sizes = sorted({int(s) for s in args.batch_sizes.split(",")})
    rows: list[Row] = []
    for network in args.networks.split(","):
        ref = load_reference(network, paths[network], "cpu")
        refs = ReferenceOutputs(network, ref, (h, w))
        for backend in args.backends.split(","):
            for precision in args.precisions.split(","):
                impls = args.conv_impls.split(",") if backend == "torch" and network == "ftcn" else ["auto"]
                for impl in impls:
                    try:
                        engine = load(paths[network], network, backend, precision, device, sizes[-1], cfg,
                                      fallback=False, reference=ref, conv_impl=impl, cache_dir=args.cache_dir,
                                      compile=args.compile or None, cuda_graphs=args.cuda_graphs or None,
                                      retinaface_hw=(h, w))
                    except Exception as exc:  # noqa: BLE001
                        rows.append(Row(network, backend, precision, str(device), 0,
                                        note=f"skipped: {str(exc).splitlines()[0]}"))
                        continue
                    if engine.precision != precision:
                        continue  # backend ran another precision; that row is measured elsewhere
                    new = measure(engine, refs, sizes, args.repeats, args.warmup)
                    if backend == "torch" and network == "ftcn":
                        for r in new:
                            r.note = (r.note + f" conv={engine.conv_impl}").strip()
                    rows.extend(new)
                    del engine
    print(f"{dt.date.today().isoformat()}; {_hardware(str(device))}; median of {args.repeats} after "
          f"{args.warmup} warm-up; RetinaFace input {h}x{w}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
