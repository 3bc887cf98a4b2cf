"""Options shared by the sub-commands, so every command spells and resolves them the same way."""

from __future__ import annotations

import argparse
from typing import Any


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML config overriding configs/default.yaml")


def add_weights_args(
    p: argparse.ArgumentParser,
    *,
    checkpoint: bool = True,
    detector: bool = True,
    device_help: str = "cpu, cuda, cuda:N (default: auto)",
) -> None:
    """--checkpoint, --detector-weights, --weights-dir and --device."""
    if checkpoint:
        p.add_argument("--checkpoint", default=None, help="FTCN checkpoint (default: the weights cache)")
    if detector:
        p.add_argument("--detector-weights", default=None, help="RetinaFace weights (default: the weights cache)")
    p.add_argument("--weights-dir", default=None, help="weights cache directory (see `ftcn-stream weights path`)")
    p.add_argument("--device", default=None, help=device_help)


def load_cli_config(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config of --config, with --weights-dir and --align (when the command has them) applied."""
    from ftcn.config import load_config

    extra: dict[str, Any] = dict(overrides or {})
    if getattr(args, "weights_dir", None):
        extra["weights"] = {"dir": args.weights_dir}
    if getattr(args, "align", None):
        extra["align"] = {"backend": args.align}
    return load_config(getattr(args, "config", None), extra)
