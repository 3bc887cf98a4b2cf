"""Live pipeline benchmark: N concurrent streams -> processed fps, drops, clip latency, CPU/GPU use.

    python bench/stream.py VIDEO --streams 4 --seconds 30 --stride 8 [--realtime] [--checkpoint CKPT]
        [--detector-weights W] [--device cuda] [--size 720]

File sources are paced in real time by default (like cameras; drops when behind). Latency
is a clip's last frame arrival -> its score event (the moment it is handed to MQTT).
Prints one JSON object. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftcn.config import load_config  # noqa: E402
from stream.pipeline import Pipeline  # noqa: E402


def prepare(video: str, size: int | None, seconds: float) -> str:
    """Loop/scale the input with ffmpeg so every stream lasts the whole run."""
    out = Path(tempfile.gettempdir()) / f"bench_{Path(video).stem}_{size}_{int(seconds)}.mp4"
    if not out.exists():
        vf = ["-vf", f"scale=-2:{size}"] if size else []
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-t", str(seconds + 5), "-i", video,
                        *vf, "-an", "-c:v", "libx264", "-preset", "veryfast", "-g", "30", str(out)], check=True)
    return str(out)


async def run(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config, {"stream": {"stride": args.stride, "device": args.device or "auto",
                                               "mux": {"max_batch": args.max_batch},
                                               "classify": {"max_batch": args.clip_batch}}})
    p = Pipeline(cfg, checkpoint=args.checkpoint, detector_weights=args.detector_weights, device=args.device)
    lat: list[float] = []
    p.bus.subscribe(lambda e: lat.append(e.payload["latency_ms"]) if e.kind == "face_score" else None)
    video = prepare(args.video, args.size, args.seconds)
    await p.start()
    t0, c0 = time.time(), os.times()
    for i in range(args.streams):
        p.add_stream(f"s{i}", video, realtime=not args.fast)
    gpu = []
    end = t0 + args.seconds
    while time.time() < end:
        await asyncio.sleep(1.0)
        if p.device.startswith("cuda"):
            try:
                import torch

                gpu.append(torch.cuda.utilization())
            except Exception:  # noqa: BLE001 - needs pynvml
                pass
    wall = time.time() - t0
    c1 = os.times()
    snap = p.snapshot()["streams"]
    await p.stop()
    frames_in = sum(s["frames_in"] for s in snap.values())
    processed = sum(s["frames_processed"] for s in snap.values())
    dropped = sum(s["frames_dropped"] for s in snap.values())
    a = np.array(lat) if lat else None
    return {
        "device": p.device, "engine": p.engine, "streams": args.streams, "stride": args.stride,
        "size": args.size, "seconds": round(wall, 1), "realtime": not args.fast,
        "input_fps": round(frames_in / wall, 1), "processed_fps": round(processed / wall, 1),
        "processed_fps_per_stream": round(processed / wall / args.streams, 2),
        "drop_rate": round(dropped / max(1, frames_in), 4), "clips": len(lat),
        "latency_ms_p50": None if a is None else round(float(np.percentile(a, 50)), 1),
        "latency_ms_p95": None if a is None else round(float(np.percentile(a, 95)), 1),
        "cpu_util": round(((c1.user - c0.user) + (c1.system - c0.system)) / wall / (os.cpu_count() or 1), 3),
        "gpu_util_mean": round(float(np.mean(gpu)), 1) if gpu else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--size", type=int, default=None, help="scale input to this height (e.g. 720)")
    ap.add_argument("--fast", action="store_true", help="do not pace files (offline throughput)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--clip-batch", type=int, default=16)
    ap.add_argument("--config")
    ap.add_argument("--checkpoint")
    ap.add_argument("--detector-weights")
    ap.add_argument("--device")
    print(json.dumps(asyncio.run(run(ap.parse_args()))))


if __name__ == "__main__":
    main()
