"""`ftcn-stream build-engines`: export ONNX, build TensorRT/ONNX Runtime/torch engines, print a parity table."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    from engines.build import add_arguments

    p = subparsers.add_parser(
        "build-engines",
        help="export ONNX and build inference engines; print parity and throughput",
        description="Export RetinaFace and FTCN+TT to ONNX (dynamic batch), build engines for the chosen "
        "backends (TensorRT engines are cached by weights, TensorRT version, GPU, precision and profile), "
        "and print each engine's parity error against the float32 torch model and its throughput.",
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from engines.build import run

    return run(args)
