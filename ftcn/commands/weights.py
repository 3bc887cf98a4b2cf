"""`ftcn-stream weights fetch|verify|path`: download, check and locate the weight files."""

from __future__ import annotations

import argparse
import sys
from typing import Any

NAMES = ("ftcn_tt", "retinaface")


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights-dir", metavar="DIR",
                        help="weights cache directory (default: $FTCN_WEIGHTS_DIR, config weights.dir, "
                             "$XDG_CACHE_HOME/ftcn-stream/weights, ~/.cache/ftcn-stream/weights)")
    common.add_argument("--config", metavar="FILE", help="YAML config file (weights.dir, model.checkpoint, "
                                                         "detector.weights)")
    common.add_argument("--only", action="append", choices=NAMES, metavar="NAME",
                        help=f"only this file ({' or '.join(NAMES)}); repeatable; default: all")
    common.add_argument("--quiet", action="store_true", help="no progress bar; print only errors (path: only the paths)")

    p = subparsers.add_parser("weights", help="download, verify and locate the model weights",
                              description="Download, verify and locate the FTCN+TT and RetinaFace weights.")
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    sub.required = True

    f = sub.add_parser("fetch", parents=[common], help="download the official weights into the cache",
                       description="Download the official weights into the cache directory: resumable, "
                                   "checked (size/sha256 where known, tensor count), renamed into place "
                                   "atomically. Valid files already present are skipped. "
                                   "$FTCN_WEIGHTS_BASE_URL replaces the official URLs with a mirror.")
    f.add_argument("--force", action="store_true", help="download again even when a valid file is present")
    f.set_defaults(func=_fetch)

    v = sub.add_parser("verify", parents=[common], help="check the cached weights (exit 1 if any is bad)",
                       description="Check presence, size, sha256 (where known) and that each file loads "
                                   "with torch (weights_only) with the expected number of tensors.")
    v.set_defaults(func=_verify)

    pa = sub.add_parser("path", parents=[common], help="print where each weight file is looked for",
                        description="Print the resolved path of each weight file, where it comes from, "
                                    "and whether it is present.")
    pa.set_defaults(func=_path)


def _cfg(args: argparse.Namespace) -> dict[str, Any]:
    from ftcn.config import load_config

    return load_config(args.config)


def _fetch(args: argparse.Namespace) -> int:
    from ftcn import weights as w

    dest = w.weights_dir(_cfg(args), args.weights_dir)
    if not args.quiet:
        print(f"weights dir: {dest}")
    results = w.fetch(args.only, dest, force=args.force, progress=not args.quiet)
    if not args.quiet:
        for r in results:
            note = f" ({r.check.message})" if r.check else ""
            print(f"{r.name:<11} {r.action:<10} {r.path}{note}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ftcn import weights as w

    dest = w.weights_dir(_cfg(args), args.weights_dir)
    results = w.verify(dest, args.only)
    if not args.quiet:
        print(f"weights dir: {dest}")
        rows = [("name", "status", "bytes", "tensors", "details")]
        for r in results:
            rows.append((r.name, "ok" if r.ok else "BAD", f"{r.size:,}" if r.size is not None else "-",
                         str(r.tensors) if r.tensors is not None else "-", r.message))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:4])) + "  " + row[4])
    bad = [r for r in results if not r.ok]
    if bad:
        if args.quiet:
            for r in bad:
                print(f"{r.name}: {r.path}: {r.message}", file=sys.stderr)
        print(f"{len(bad)} of {len(results)} weight files bad; `ftcn-stream weights fetch` downloads "
              "missing or bad files", file=sys.stderr)
    return 1 if bad else 0


def _path(args: argparse.Namespace) -> int:
    from ftcn import weights as w

    cfg = _cfg(args)
    if not args.quiet:
        print(f"weights dir: {w.weights_dir(cfg, args.weights_dir)}")
    for name in args.only or NAMES:
        r = w.resolve(name, cfg, weights_dir_override=args.weights_dir)
        if args.quiet:  # one path per line, for scripts
            print(r.path)
            continue
        state = "present" if r.present else "missing"
        print(f"{name:<11} {state:<8} {r.path}  ({r.source})")
    return 0
