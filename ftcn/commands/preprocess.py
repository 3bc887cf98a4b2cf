"""`ftcn-stream preprocess`: real/ and fake/ videos -> aligned 32-frame training clips (TrueMedia flags)."""

from __future__ import annotations

import argparse
import sys

from ftcn.commands.common import add_config_arg, add_weights_args, load_cli_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess",
        help="extract aligned face clips from real/ and fake/ videos for training",
        description="Run the inference face path (detector, tracker, alignment) over every video under "
        "DIR/real and DIR/fake (at any depth) and save up to --max_clips evenly spaced 32-frame clips per "
        "video. Resumable: videos already done are skipped. See docs/training.md.",
    )
    p.add_argument("-d", "--data_dir", "--data-dir", dest="data_dir", required=True,
                   help="input root holding real/ and fake/ folders")
    p.add_argument("-o", "--out", "--output_dir", "--output-dir", dest="out", required=True,
                   help="output directory for clips and index.csv")
    add_config_arg(p)
    p.add_argument("--max_clips", "--max-clips", dest="max_clips", type=int, default=None,
                   help="clips kept per video (default: train.preprocess.max_clips)")
    p.add_argument("--max_frames", "--max-frames", dest="max_frames", type=int, default=None,
                   help="frames read per video (default: train.preprocess.max_frames; 0 = all)")
    p.add_argument("--face_thres", "--face-thres", dest="face_thres", type=float, default=None,
                   help="minimum detector score of a face (default: detector.face_threshold)")
    p.add_argument("--bbox_thres", "--bbox-thres", dest="bbox_thres", type=float, default=None,
                   help="minimum face box area in pixels, width*height (default: train.preprocess.bbox_thres)")
    add_weights_args(p, checkpoint=False)
    p.add_argument("--align", choices=["auto", "cv2", "torch"], default=None, help="alignment implementation")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftcn.config import resolve_device
    from ftcn.detector import RetinaFaceDetector
    from ftcn.errors import InputError
    from ftcn.training.preprocess import Preprocessor, PreprocessSettings, find_videos
    from ftcn.weights import resolve_detector_weights

    cfg = load_cli_config(args)
    pcfg = cfg.get("train", {}).get("preprocess", {})

    def pick(cli: object, key: str, default: object) -> object:
        return cli if cli is not None else pcfg.get(key, default)

    max_frames = pick(args.max_frames, "max_frames", None)
    face_thres = pick(args.face_thres, "face_thres", None)
    settings = PreprocessSettings(
        max_clips=int(pick(args.max_clips, "max_clips", 8)),
        max_frames=int(max_frames) if max_frames else None,
        face_thres=float(face_thres if face_thres is not None else cfg["detector"]["face_threshold"]),
        bbox_thres=float(pick(args.bbox_thres, "bbox_thres", 0)),
        min_track_frames=int(pcfg.get("min_track_frames", 16)),
    )
    if settings.max_clips < 1:
        raise InputError("--max_clips must be >= 1")
    if not 0.0 <= settings.face_thres <= 1.0:
        raise InputError("--face_thres must be between 0 and 1")
    videos, unlabelled = find_videos(args.data_dir)
    if not videos:
        raise InputError(f"no videos under a real/ or fake/ folder in {args.data_dir}")

    device = resolve_device(args.device or cfg["analyze"].get("device", "auto"))
    backend = cfg["align"].get("backend", "auto")
    if backend == "auto":
        backend = "torch" if device.startswith("cuda") else "cv2"
    det_cfg = {**cfg["detector"], "face_threshold": settings.face_thres}
    detector = RetinaFaceDetector.from_config(det_cfg, resolve_detector_weights(cfg, args.detector_weights), device)
    pre = Preprocessor(cfg, detector, args.out, settings, backend, device)
    summary = pre.run(videos, progress=not args.quiet and sys.stderr.isatty())
    summary.unlabelled = unlabelled

    print(f"videos: {summary.videos} (processed {summary.processed}, skipped as done {summary.skipped}); "
          f"with clips: {summary.ok}; clips written in total: {summary.clips}", file=sys.stderr)
    if unlabelled:
        print(f"ignored {len(unlabelled)} videos outside real/ and fake/ folders", file=sys.stderr)
    if summary.no_face:
        print(f"no usable face in {len(summary.no_face)} videos:", file=sys.stderr)
        for v in summary.no_face:
            print(f"  {v}", file=sys.stderr)
    if summary.errors:
        print(f"failed on {len(summary.errors)} videos (retried on the next run):", file=sys.stderr)
        for v, e in summary.errors.items():
            print(f"  {v}: {e}", file=sys.stderr)
    print(f"manifest: {args.out}/index.csv", file=sys.stderr)
    return 0
