"""`ftcn-stream run`: the live job (sources -> scores and alerts over MQTT, HTTP control)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
from typing import Any

from ftcn.commands.common import add_config_arg, add_weights_args, load_cli_config

log = logging.getLogger("ftcn.run")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="analyse live streams (RTSP, HTTP/HLS, files, webcams); scores and alerts over MQTT",
        description="Run the live pipeline. SOURCE is a URL or path, optionally named: cam1=rtsp://host/x.",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="[ID=]rtsp://... | http(s)://... | /dev/videoN | FILE")
    add_config_arg(p)
    p.add_argument("--mqtt", metavar="URL", help="broker URL mqtt(s)://user:pass@host:port (default: embedded broker)")
    p.add_argument("--no-mqtt", action="store_true", help="do not publish over MQTT")
    p.add_argument("--http", metavar="HOST:PORT", help="HTTP listen address (default from config: 127.0.0.1:8000)")
    add_weights_args(p, device_help="cpu, cuda, cuda:1 ... (default: config stream.device)")
    p.add_argument("--stride", type=int, help="classify a clip every N frames per face")
    p.add_argument("--realtime", action="store_true", help="pace file sources like a camera")
    p.add_argument("--exit-when-done", action="store_true", help="exit when every source has ended")
    p.set_defaults(func=handle)


def parse_source(text: str, n: int) -> tuple[str, str]:
    """`cam1=rtsp://...` -> ("cam1", url); unnamed sources get stream0, stream1, ..."""
    m = re.match(r"^([A-Za-z0-9._-]{1,64})=(.+)$", text)
    if m and "://" not in m.group(1):
        return m.group(1), m.group(2)
    return f"stream{n}", text


def handle(args: argparse.Namespace) -> int:
    from ftcn.errors import ConfigError

    overrides: dict[str, Any] = {"stream": {}}
    if args.stride:
        overrides["stream"]["stride"] = args.stride
    if args.realtime:
        overrides["stream"]["realtime"] = True
    if args.no_mqtt:
        overrides["mqtt"] = {"enabled": False}
    cfg = load_cli_config(args, overrides)
    sources = [parse_source(s, i) for i, s in enumerate(args.sources)]
    if len({sid for sid, _ in sources}) != len(sources):
        raise ConfigError("two sources have the same id")
    return asyncio.run(_main(cfg, args, sources))


async def _main(cfg: dict[str, Any], args: argparse.Namespace, sources: list[tuple[str, str]]) -> int:
    from stream.app import StreamApp

    app = StreamApp(
        cfg, mqtt_url=args.mqtt, http=args.http,
        pipeline_kwargs={"checkpoint": args.checkpoint, "detector_weights": args.detector_weights,
                         "device": args.device},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await app.start()
        for sid, url in sources:
            app.pipeline.add_stream(sid, url)
        waiter = asyncio.create_task(stop.wait())
        if args.exit_when_done and sources:
            done = asyncio.create_task(asyncio.gather(*(app.pipeline.wait_stream(s) for s, _ in sources)))
            await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
            done.cancel()
        else:
            await waiter
        waiter.cancel()
        log.info("shutting down")
    finally:
        await app.stop()
    return 0
