"""The analyzer's HTTP server (aiohttp): healthcheck, stream management, Prometheus metrics.

`create_app` returns an `aiohttp.web.Application` whose routes can be extended by
other components before the server starts (e.g. WHIP ingest, the viewer): pass
`extra_routes` callables or call `app.router.add_*` yourself. The pipeline is
available to handlers as `request.app[PIPELINE]`.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream.pipeline import Pipeline

PIPELINE: web.AppKey[Pipeline] = web.AppKey("pipeline", Pipeline)
CONFIG: web.AppKey[dict] = web.AppKey("config", dict)
EXTRA_HEALTH: web.AppKey[dict] = web.AppKey("extra_health", dict)
MQTT_SINK: web.AppKey[Any] = web.AppKey("mqtt_sink")

# Open without a token: the health probe, and the viewer's static page and assets (they hold no
# data; everything the page then fetches carries the token).
OPEN_PATHS = {"/healthcheck", "/viewer"}
OPEN_PREFIXES = ("/viewer/static/",)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def bearer_middleware(token: str) -> Any:
    """Every route but /healthcheck needs `Authorization: Bearer <token>`.

    A browser cannot set that header when it opens the viewer page, a WebSocket or an MJPEG
    <img>, so `?access_token=<token>` is accepted too (RFC 6750 section 2.3); the access log
    is off, so the token is not written to logs.
    """
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES) or request.method == "OPTIONS":
            return await handler(request)
        got = request.headers.get("Authorization", "").encode()
        if not got and "access_token" in request.query:
            got = f"Bearer {request.query['access_token']}".encode()
        if not hmac.compare_digest(got, expected):
            return web.json_response(
                {"error": "missing or wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return await handler(request)

    return check


async def healthcheck(request: web.Request) -> web.Response:
    p = request.app[PIPELINE]
    body = {
        "healthy": p.running,
        "model": p.model_id,
        "engine": p.engine,
        "device": p.device,
        "uptime_s": round(time.time() - p.started, 1),
        "streams": len(p.streams),
        **request.app[EXTRA_HEALTH],
    }
    return web.json_response(body, status=200 if p.running else 503)


async def list_streams(request: web.Request) -> web.Response:
    p = request.app[PIPELINE]
    return web.json_response({"streams": [p.describe(sid) for sid in p.streams]})


async def get_stream(request: web.Request) -> web.Response:
    p = request.app[PIPELINE]
    sid = request.match_info["stream_id"]
    if sid not in p.streams:
        return _json_error(404, f"no stream {sid!r}")
    return web.json_response(p.describe(sid))


async def add_stream(request: web.Request) -> web.Response:
    """POST /streams {"id": "cam1", "url": "rtsp://...", "realtime": false}."""
    p = request.app[PIPELINE]
    try:
        body = await request.json()
    except ValueError:
        return _json_error(400, "body must be JSON: {\"id\": ..., \"url\": ...}")
    if not isinstance(body, dict) or not isinstance(body.get("url"), str) or not body["url"]:
        return _json_error(400, "a JSON object with a non-empty string 'url' is required")
    if body.get("id") is not None and not isinstance(body["id"], str):
        return _json_error(400, "'id' must be a string")
    if body.get("realtime") is not None and not isinstance(body["realtime"], bool):
        return _json_error(400, "'realtime' must be true or false")
    sid = body.get("id") or f"stream{len(p.streams)}"
    while p.id_taken(sid) and not body.get("id"):
        sid = f"{sid}_"
    if p.id_taken(sid):
        return _json_error(409, f"stream {sid!r} already exists (or is still ending)")
    try:
        p.add_stream(str(sid), body["url"], realtime=body.get("realtime"))
    except ValueError as exc:
        return _json_error(400, str(exc))
    return web.json_response(p.describe(sid), status=201)


async def delete_stream(request: web.Request) -> web.Response:
    p = request.app[PIPELINE]
    sid = request.match_info.get("stream_id") or request.query.get("id", "")
    if not await p.remove_stream(sid, wait=False):
        return _json_error(404, f"no stream {sid!r}")
    return web.json_response({"id": sid, "state": "ended"})


async def metrics(request: web.Request) -> web.Response:
    p = request.app[PIPELINE]
    resp = web.Response(body=generate_latest(p.metrics.registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp


def create_app(
    pipeline: Pipeline,
    cfg: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    extra_routes: Iterable[Callable[[web.Application], None]] = (),
) -> web.Application:
    cfg = cfg or pipeline.cfg
    token = token if token is not None else (cfg.get("http", {}) or {}).get("token")
    app = web.Application(middlewares=[bearer_middleware(token)] if token else [])
    app[PIPELINE] = pipeline
    app[CONFIG] = cfg
    app[EXTRA_HEALTH] = {}
    app.router.add_get("/healthcheck", healthcheck)
    app.router.add_get("/streams", list_streams)
    app.router.add_post("/streams", add_stream)
    app.router.add_delete("/streams", delete_stream)
    app.router.add_get("/streams/{stream_id}", get_stream)
    app.router.add_delete("/streams/{stream_id}", delete_stream)
    app.router.add_get("/metrics", metrics)
    for register in extra_routes:
        register(app)
    return app
