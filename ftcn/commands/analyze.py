"""`ftcn-stream analyze VIDEO`: offline analysis with annotated video, report.json and timeline.png."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ftcn.commands.common import add_config_arg, add_weights_args, load_cli_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyse a video file (annotated video, JSON report, score timeline)",
        description="Analyse a whole video file with FTCN+TT, as the official demo does: every face is "
        "tracked, every 32-frame clip is scored, and the video gets a REAL/FAKE/NO_FACE verdict.",
    )
    p.add_argument("video", help="input video file")
    p.add_argument("--out", "-o", default=None, help="output directory (default: ./ftcn_out/<video name>)")
    add_config_arg(p)
    add_weights_args(p)
    p.add_argument("--stride", type=int, default=None, help="frames between clip starts (default 1 = paper)")
    p.add_argument("--max-frames", type=int, default=None, help="analyse only the first N frames")
    p.add_argument("--batch-size", type=int, default=None, help="clips per classifier batch")
    p.add_argument("--align", choices=["auto", "cv2", "torch"], default=None, help="alignment implementation")
    p.add_argument("--no-video", action="store_true", help="skip the annotated video")
    p.add_argument("--no-plot", action="store_true", help="skip timeline.png")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.add_argument("--json", action="store_true", help="print the report JSON to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftcn.analyze import Analyzer
    from ftcn.errors import InputError
    from ftcn.video import probe_video

    if args.stride is not None and args.stride < 1:
        raise InputError("--stride must be >= 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError("--max-frames must be >= 1")
    cfg = load_cli_config(args)
    probe_video(args.video)  # fail fast on bad input, before loading models
    out = Path(args.out) if args.out else Path("ftcn_out") / Path(args.video).stem
    analyzer = Analyzer(cfg, checkpoint=args.checkpoint, device=args.device, detector_weights=args.detector_weights)
    report = analyzer.analyze(
        args.video,
        out_dir=out,
        stride=args.stride,
        max_frames=args.max_frames,
        batch_size=args.batch_size,
        progress=not args.quiet and sys.stderr.isatty(),
        write_video=not args.no_video,
        write_plot=not args.no_plot,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    if not args.quiet:
        df = report["df_probability"]
        score = "n/a" if df is None else f"{df:.6f}"
        print(
            f"{report['prediction']}  df_probability={score}  threshold={report['threshold']:.6g}  "
            f"tracks={report['num_tracks']}  clips={report['num_clips']}  frames={report['num_frames']}",
            file=sys.stderr,
        )
        for w in report["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        print(f"outputs in {out}/", file=sys.stderr)
    return 0
