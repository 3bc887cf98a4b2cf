"""`ftcn-stream serve`: the TrueMedia-compatible /healthcheck + /predict HTTP service on its own."""

from __future__ import annotations

import argparse

from ftcn.commands.common import add_config_arg, add_weights_args, load_cli_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP service: GET /healthcheck, POST /predict (TrueMedia-compatible)",
        description="Serve POST /predict {\"file_path\": URL or local path} and GET /healthcheck. Local "
        "paths must lie under serve.allowed_dirs; URLs to private networks are refused unless allowed "
        "in the config (see docs/predict.md).",
    )
    p.add_argument("--host", default=None, help="listen address (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: serve.port, 8000)")
    add_config_arg(p)
    add_weights_args(p)
    p.add_argument(
        "--allow-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="also accept local files under DIR (repeatable; adds to serve.allowed_dirs)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from aiohttp import web

    from ftcn.errors import ConfigError
    from ftcn.predict_service import PredictService, create_app

    cfg = load_cli_config(args)
    serve = cfg.setdefault("serve", {})
    if args.allow_dir:
        serve["allowed_dirs"] = list(serve.get("allowed_dirs") or []) + list(args.allow_dir)
    host = args.host or serve.get("host", "127.0.0.1")
    port = args.port if args.port is not None else int(serve.get("port", 8000))
    if not 0 <= port < 65536:
        raise ConfigError(f"invalid port {port}")
    service = PredictService.from_config(
        cfg, checkpoint=args.checkpoint, device=args.device, detector_weights=args.detector_weights
    )
    info = service.health()
    logging.getLogger("ftcn.serve").info(
        "model %s (sha256 %s) on %s; allowed dirs: %s; auth: %s",
        info["model"]["id"],
        (info["model"]["sha256"] or "?")[:12],
        info["device"],
        ", ".join(str(d) for d in service.policy.allowed_dirs) or "none (URLs only)",
        "bearer token" if service.token else "none",
    )
    web.run_app(create_app(service), host=host, port=port, print=None)
    return 0
