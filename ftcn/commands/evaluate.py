"""`ftcn-stream evaluate`: video-level AUC, accuracy at the operating threshold, ROC, calibration."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score preprocessed clips with a checkpoint: video AUC, accuracy, ROC, threshold calibration",
        description="Video score = mean clip probability (as df_probability). Reports AUC, accuracy at the "
        "configured threshold (model.thresholds[model id]) and a calibrated threshold (Youden's J, or the best "
        "TPR at a target FPR) that --write-threshold stores in a config YAML. See docs/training.md.",
    )
    p.add_argument("-d", "--data", "--data_dir", dest="data", required=True, help="output directory of `preprocess`")
    p.add_argument("-p", "--checkpoint", "--pretrained", dest="checkpoint", required=True, help="FTCN checkpoint")
    p.add_argument("-c", "--config", default=None, help="YAML config (thresholds, model id)")
    p.add_argument("--split", default=None, help="CSV with filename,label,split; see --subset")
    p.add_argument("--subset", choices=["all", "train", "val", "test"], default="all",
                   help="split of the --split CSV to evaluate (default: every clip)")
    p.add_argument("--out", "-o", default="ftcn_eval", help="output directory (default: ./ftcn_eval)")
    p.add_argument("--model-id", default=None, help="threshold key (default: model.id of the config)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=4)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--calibration", choices=["youden", "fpr"], default="youden",
                   help="threshold choice: Youden's J (default) or best TPR with FPR <= --target-fpr")
    p.add_argument("--target-fpr", type=float, default=None, help="FPR budget for --calibration fpr")
    p.add_argument("--write-threshold", metavar="CONFIG", default=None,
                   help="write the calibrated threshold into this YAML under model.thresholds[model id]")
    p.add_argument("--json", action="store_true", help="print the report JSON to stdout")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftcn.config import load_config, resolve_device
    from ftcn.errors import InputError
    from ftcn.training.evaluate import evaluate_checkpoint

    if args.subset != "all" and not args.split:
        raise InputError("--subset needs --split")
    if args.calibration == "fpr" and args.target_fpr is None:
        raise InputError("--calibration fpr needs --target-fpr")
    cfg = load_config(args.config)
    report = evaluate_checkpoint(
        cfg, args.data, args.checkpoint, args.out, split_csv=args.split, subset=args.subset,
        device=resolve_device(args.device or cfg["analyze"].get("device", "auto")), batch_size=args.batch_size,
        num_workers=args.num_workers, model_id=args.model_id, calibration=args.calibration,
        target_fpr=args.target_fpr, write_config=args.write_threshold,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(report, indent=2))
    if not args.quiet:
        auc = "n/a" if report["auc"] is None else f"{report['auc']:.4f}"
        print(f"videos={report['videos']} clips={report['clips']} AUC={auc} "
              f"accuracy@{report['threshold']:.6g}={report['video_acc']:.4f}", file=sys.stderr)
        cal = report.get("calibration")
        if cal:
            print(f"calibrated threshold ({cal['method']}): {cal['threshold']:.6g} "
                  f"(FPR {cal['fpr']:.3f}, TPR {cal['tpr']:.3f})"
                  + (f" written to {cal['written_to']}" if "written_to" in cal else ""), file=sys.stderr)
        print(f"outputs in {args.out}/", file=sys.stderr)
    return 0
