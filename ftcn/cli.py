"""`ftcn-stream` command line: one sub-command module per job under ftcn/commands/.

Each command module exposes `register(subparsers)` and keeps heavy imports (torch,
av) inside its handler so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ftcn import __version__
from ftcn.errors import FTCNError

# Order is the order shown in --help.
COMMAND_MODULES = [
    "ftcn.commands.analyze",
    "ftcn.commands.run",
    "ftcn.commands.publish",
    "ftcn.commands.weights",
    "ftcn.commands.serve",
    "ftcn.commands.preprocess",
    "ftcn.commands.train",
    "ftcn.commands.evaluate",
    "ftcn.commands.build_engines",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftcn-stream",
        description="Real-time and offline video deepfake analysis with FTCN+TT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except FTCNError as exc:
        print(f"ftcn-stream: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ftcn-stream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
