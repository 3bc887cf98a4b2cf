"""Benchmark: `analyze` wall time against the model-only bound.

The model-only bound is (number of clips) x (measured model seconds per clip at the
same batch size): the time the classifier alone needs, with decoding, detection,
tracking and alignment free. The goal is analyze <= 1.10 x that bound.

    python bench/offline.py VIDEO --checkpoint CKPT --detector-weights W [--max-frames N] [--stride S]

Prints a table and a JSON line (append it to docs/benchmarks.md with hardware and date).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

# bench/engines.py and bench/stream.py would shadow the `engines` and `stream` packages
# (a script's own folder comes first on sys.path): put the repository root first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ftcn.analyze import Analyzer  # noqa: E402
from ftcn.config import load_config  # noqa: E402
from ftcn.model import normalize_clips  # noqa: E402


def model_seconds_per_clip(analyzer: Analyzer, batch: int, repeats: int) -> float:
    """Median forward time per clip on random uint8 clips, preprocessing included."""
    x = torch.randint(0, 256, (batch, 32, 224, 224, 3), dtype=torch.uint8).to(analyzer.device)
    times = []
    with torch.inference_mode():
        analyzer.model(normalize_clips(x))  # warm-up
        for _ in range(repeats):
            if analyzer.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            analyzer.model(normalize_clips(x))
            if analyzer.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) / batch)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--detector-weights", required=True)
    ap.add_argument("--max-frames", type=int, default=64)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cfg = load_config()
    analyzer = Analyzer(cfg, args.checkpoint, args.device, args.detector_weights)
    per_clip = model_seconds_per_clip(analyzer, args.batch_size, args.repeats)
    t0 = time.perf_counter()
    report = analyzer.analyze(
        args.video, max_frames=args.max_frames, stride=args.stride, batch_size=args.batch_size,
        write_video=False, write_plot=False,
    )
    wall = time.perf_counter() - t0
    n = report["num_clips"]
    bound = n * per_clip
    t = report["timings"]
    result = {
        "video": args.video,
        "frames": report["num_frames"],
        "clips": n,
        "stride": args.stride,
        "batch_size": args.batch_size,
        "device": analyzer.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "model_s_per_clip": round(per_clip, 4),
        "model_only_bound_s": round(bound, 3),
        "analyze_wall_s": round(wall, 3),
        "ratio": round(wall / bound, 3) if bound else None,
        "stages_s": {k: t[k] for k in ("decode_s", "detect_s", "track_crop_s", "align_s", "classify_s")},
        "detect_ms_per_frame": round(1000 * t["detect_s"] / max(1, report["num_frames"]), 1),
    }
    print(f"{'stage':<14}{'seconds':>10}")
    for k, v in result["stages_s"].items():
        print(f"{k:<14}{v:>10.3f}")
    print(f"clips={n} model/clip={per_clip:.3f}s bound={bound:.2f}s analyze={wall:.2f}s ratio={result['ratio']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
