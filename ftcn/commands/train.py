"""`ftcn-stream train`: fine-tune FTCN+TT on preprocessed clips (single process, or under torchrun)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ftcn.commands.common import add_config_arg, add_weights_args, load_cli_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune FTCN+TT on clips written by `preprocess`",
        description="Fine-tune FTCN+TT with BCE on the logit and Adam; mixed precision on CUDA; multi-GPU "
        "with `torchrun --nproc_per_node N -m ftcn.cli train ...`. The best epoch (video-level AUC on the "
        "validation split) is saved as OUT/best.pth in the official checkpoint format. See docs/training.md.",
    )
    p.add_argument("-d", "--data", "--data_dir", dest="data", required=True, help="output directory of `preprocess`")
    p.add_argument("-p", "--pretrained", default=None,
                   help="checkpoint to start from (default: the configured/cached official ftcn_tt.pth)")
    p.add_argument("--from-scratch", action="store_true", help="start from random weights (not recommended)")
    add_config_arg(p)
    p.add_argument("--split", default=None, help="CSV with filename,label,split (train/val/test) per video")
    p.add_argument("--freeze", action="store_true", help="train only the transformer head (resnet.head)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=None,
                   help="clips per step per process")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    p.add_argument("--out", "-o", default="ftcn_train", help="output directory (default: ./ftcn_train)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from a training state (default: OUT/train_state.pt)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-steps", "--max_steps", dest="max_steps", type=int, default=None,
                   help="stop after this many optimizer steps in total")
    p.add_argument("--val-fraction", type=float, default=None, help="validation share without --split")
    p.add_argument("--num-workers", type=int, default=None, help="data loader workers per process")
    p.add_argument("--no-augment", action="store_true", help="disable augmentation")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--model-id", default=None, help="id of the fine-tuned model in OUT/config.yaml")
    add_weights_args(p, checkpoint=False, detector=False,
                     device_help="cpu, cuda (default: auto; under torchrun cuda:LOCAL_RANK)")
    p.add_argument("--checksum-file", default=None,
                   help="write this rank's parameter sha256 as JSON ({rank} is replaced; for DDP checks)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftcn.config import resolve_device
    from ftcn.errors import InputError
    from ftcn.training.train import STATE_FILE, TrainOptions, train

    cfg = load_cli_config(args)
    t = cfg.get("train", {})

    def pick(cli: object, key: str, default: object) -> object:
        return cli if cli is not None else t.get(key, default)

    out = Path(args.out)
    resume = None
    if args.resume is not None:
        resume = out / STATE_FILE if args.resume == "auto" else Path(args.resume)
        if not resume.is_file():
            raise InputError(f"no training state to resume at {resume}")
    if args.pretrained and not Path(args.pretrained).is_file():
        raise InputError(f"pretrained checkpoint not found: {args.pretrained}")
    augment = dict(t.get("augment", {}))
    if args.no_augment:
        augment["enabled"] = False
    opts = TrainOptions(
        data=Path(args.data),
        out=out,
        pretrained=Path(args.pretrained) if args.pretrained else None,
        from_scratch=args.from_scratch,
        split_csv=Path(args.split) if args.split else None,
        freeze=args.freeze,
        epochs=int(pick(args.epochs, "epochs", 5)),
        batch_size=int(pick(args.batch_size, "batch_size", 4)),
        lr=float(pick(args.lr, "lr", 1e-5)),
        weight_decay=float(t.get("weight_decay", 0.0)),
        seed=int(pick(args.seed, "seed", 0)),
        max_steps=args.max_steps,
        resume=resume,
        device=resolve_device(args.device or cfg["analyze"].get("device", "auto")),
        num_workers=int(pick(args.num_workers, "num_workers", 2)),
        val_fraction=float(pick(args.val_fraction, "val_fraction", 0.2)),
        amp=bool(t.get("amp", True)) and not args.no_amp,
        freeze_bn_stats=bool(t.get("freeze_bn_stats", True)),
        grad_clip=t.get("grad_clip"),
        model_id=str(args.model_id or t.get("model_id", "ftcn_tt_finetuned")),
        augment=augment,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    if opts.epochs < 1 or opts.batch_size < 1 or opts.lr <= 0:
        raise InputError("--epochs and --batch-size must be >= 1 and --lr > 0")
    summary = train(cfg, opts)
    if args.checksum_file:
        import os

        rank = os.environ.get("RANK", "0")
        Path(args.checksum_file.replace("{rank}", rank)).write_text(
            json.dumps({"rank": int(rank), **summary["param_checksum"]})
        )
    if "outputs" in summary and not args.quiet:
        best = summary.get("best") or {}
        shown = {k: best.get(k) for k in ("epoch", "train_loss", "val_loss", "val_acc", "val_auc")}
        print(f"best epoch: {shown}", file=sys.stderr)
        print(f"checkpoint (official format): {summary['outputs']['best']}", file=sys.stderr)
        print(f"analyze with: ftcn-stream analyze VIDEO -c {summary['config']}", file=sys.stderr)
    return 0
