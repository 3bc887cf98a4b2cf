"""`ftcn-stream publish FILE --whip URL`: send a local video to a WHIP endpoint, like a call would."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "publish",
        help="send a video file to a WHIP endpoint over WebRTC (simulate a call)",
        description="Stream FILE (paced in real time) to a WHIP endpoint, e.g. the analyzer's "
                    "http://127.0.0.1:8000/whip/call1. Ctrl-C hangs up (HTTP DELETE).",
    )
    p.add_argument("file", metavar="FILE", help="video file (any format FFmpeg reads)")
    p.add_argument("--whip", required=True, metavar="URL", help="WHIP endpoint URL")
    p.add_argument("--token", help="bearer token for the endpoint")
    p.add_argument("--width", type=int, help="downscale the video to this width (aspect kept)")
    p.add_argument("--codec", choices=["H264", "VP8"], help="video codec to offer (default: both)")
    p.add_argument("--loop", action="store_true", help="repeat the file until interrupted")
    p.add_argument("--duration", type=float, help="hang up after this many seconds")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from ftcn.errors import InputError

    if not Path(args.file).is_file():
        raise InputError(f"{args.file}: no such file")
    if not args.whip.lower().startswith(("http://", "https://")):
        raise InputError(f"--whip must be an http(s) URL, got {args.whip!r}")
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from ftcn.errors import FTCNError
    from stream.webrtc.client import WhipClient, WhipError

    client = WhipClient(args.whip, args.file, token=args.token, width=args.width, loop=args.loop, codec=args.codec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await client.start()
    except WhipError as exc:
        raise FTCNError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise FTCNError(f"cannot publish to {args.whip}: {exc}") from None
    print(f"publishing {args.file} -> {client.location}", flush=True)
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(client.wait())}
    if args.duration:
        waiters.add(asyncio.ensure_future(asyncio.sleep(args.duration)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        status = await client.stop()
        print(f"hung up (DELETE -> {status})", flush=True)
    return 0
