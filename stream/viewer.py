"""The live viewer: `GET /viewer` (static page), `GET /ws/{stream}` (overlay events), `GET /mjpeg/{stream}`.

A FrameHub subscribes to the pipeline's event bus. For every analyzed frame
(`frame_faces`) it forwards the boxes (each with the frame's PTS and the face's
latest rolling score) to the stream's websockets and the frame itself to MJPEG and
WHEP subscribers, so video and boxes are the same frames. Every other event goes to
the websockets as `{"type": kind, "topic": <MQTT topic>, "payload": <MQTT payload>}`.
Slow clients lose frames (bounded queues, drop oldest), never stall the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web

from stream.events import TOPICS, Event
from stream.http import CONFIG, PIPELINE

log = logging.getLogger("stream.viewer")

BOUNDARY = "ftcnframe"
MAX_TRACKS = 64  # face tracks remembered per stream (rolling score + sparkline history)


@dataclass
class ViewFrame:
    """One analyzed frame for the video outputs; the JPEG is encoded once, on first demand."""

    stream_id: str
    index: int
    pts: float
    image: Any
    jpeg: bytes | None = None


class Subscription:
    """A bounded drop-oldest queue of one client; `None` means the hub is closing."""

    def __init__(self, hub: FrameHub, key: tuple[str, str], size: int) -> None:
        self.hub, self.key = hub, key
        self.q: asyncio.Queue = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, item: Any) -> None:
        if self.q.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.q.get_nowait()
                self.dropped += 1
        self.q.put_nowait(item)

    async def get(self) -> Any:
        return await self.q.get()

    def close(self) -> None:
        self.hub.unsubscribe(self)


@dataclass
class _StreamView:
    frames: set = field(default_factory=set)
    events: set = field(default_factory=set)
    rolling: dict[int, float] = field(default_factory=dict)
    history: dict[int, deque] = field(default_factory=dict)
    last: dict[str, dict] = field(default_factory=dict)  # kind -> last message (status, alert, stream_score)


class FrameHub:
    """Fan-out of one pipeline's events and analyzed frames to viewer clients."""

    def __init__(self, prefix: str = "ftcn", history: int = 30) -> None:
        self.prefix = prefix
        self.history = history
        self.views: dict[str, _StreamView] = {}
        self.closed = False

    def _view(self, sid: str) -> _StreamView:
        return self.views.setdefault(sid, _StreamView())

    def topic(self, ev: Event) -> str | None:
        route = TOPICS.get(ev.kind)
        if route is None:
            return None
        return f"{self.prefix}/" + route[0].format(stream=ev.stream_id, track=ev.track_id)

    def on_event(self, ev: Event) -> None:
        v = self._view(ev.stream_id)
        if ev.kind == "frame_faces":
            faces = [{**f, "rolling_score": v.rolling.get(f["track"])} for f in ev.payload["faces"]]
            image = ev.attachment
            h, w = (int(image.shape[0]), int(image.shape[1])) if image is not None else (None, None)
            msg = {"type": "frame", "stream": ev.stream_id, "frame": ev.payload["frame"], "pts": ev.payload["pts"],
                   "width": w, "height": h, "faces": faces}
            for s in list(v.events):
                s.offer(msg)
            if image is not None and v.frames:
                vf = ViewFrame(ev.stream_id, ev.payload["frame"], float(ev.payload["pts"]), image)
                for s in list(v.frames):
                    s.offer(vf)
            return
        if ev.kind == "face_score":
            tid = int(ev.payload["track"])
            v.rolling.pop(tid, None)  # re-insert: dict order = least recently scored first
            v.rolling[tid] = float(ev.payload["rolling_score"])
            v.history[tid] = v.history.pop(tid, None) or deque(maxlen=self.history)
            v.history[tid].append(ev.payload)
            while len(v.history) > MAX_TRACKS:  # tracks are never announced as gone: keep the newest
                old = next(iter(v.history))
                del v.history[old]
                v.rolling.pop(old, None)
        elif ev.kind == "alert" and ev.payload.get("event") == "close" and ev.track_id is not None:
            pass
        topic = self.topic(ev)
        if topic is None:
            return
        msg = {"type": ev.kind, "topic": topic, "payload": ev.payload}
        if ev.kind in ("status", "alert", "stream_score"):
            v.last[ev.kind] = msg
        if ev.kind == "status" and ev.payload.get("state") in ("ended", "error"):
            v.rolling.clear()
            v.history.clear()
        for s in list(v.events):
            s.offer(msg)

    def snapshot(self, sid: str) -> list[dict]:
        """What a new websocket gets first: current status/alert/score and the recent face scores."""
        v = self._view(sid)
        msgs = [v.last[k] for k in ("status", "alert", "stream_score") if k in v.last]
        for tid, items in v.history.items():
            for p in items:
                msgs.append({"type": "face_score", "topic": f"{self.prefix}/{sid}/faces/{tid}/score", "payload": p})
        return msgs

    def subscribe_frames(self, sid: str, size: int = 2) -> Subscription:
        s = Subscription(self, ("frames", sid), size)
        self._view(sid).frames.add(s)
        return s

    def subscribe_events(self, sid: str, size: int = 256) -> Subscription:
        s = Subscription(self, ("events", sid), size)
        self._view(sid).events.add(s)
        return s

    def unsubscribe(self, s: Subscription) -> None:
        kind, sid = s.key
        v = self.views.get(sid)
        if v is not None:
            getattr(v, kind).discard(s)

    def close(self) -> None:
        self.closed = True
        for v in self.views.values():
            for s in list(v.frames) + list(v.events):
                s.offer(None)


FRAME_HUB: web.AppKey[FrameHub] = web.AppKey("frame_hub", FrameHub)


def hub_for(app: web.Application) -> FrameHub:
    """The application's hub, created (and subscribed to the pipeline's bus) on first use (at route setup)."""
    hub = app.get(FRAME_HUB)
    if hub is None:
        cfg = app[CONFIG]
        vcfg = cfg.get("viewer", {}) or {}
        hub = FrameHub((cfg.get("mqtt") or {}).get("prefix", "ftcn"), int(vcfg.get("sparkline_points", 30)))
        unsubscribe = app[PIPELINE].bus.subscribe(hub.on_event)
        app[FRAME_HUB] = hub

        async def _close(_: web.Application) -> None:
            unsubscribe()
            hub.close()

        app.on_shutdown.insert(0, _close)
    return hub


def _static(name: str) -> bytes:
    return resources.files("stream").joinpath("static", name).read_bytes()


STATIC_TYPES = {"viewer.html": "text/html", "viewer.js": "text/javascript", "viewer.css": "text/css"}


async def viewer_page(request: web.Request) -> web.Response:
    return web.Response(body=_static("viewer.html"), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def viewer_static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_TYPES:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=STATIC_TYPES[name], charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def viewer_config(request: web.Request) -> web.Response:
    """What the page needs to know: video transport, thresholds, stream ids."""
    cfg = request.app[CONFIG]
    p = request.app[PIPELINE]
    w, v = cfg.get("webrtc", {}) or {}, cfg.get("viewer", {}) or {}
    return web.json_response({
        "webrtc": bool(w.get("enabled", True)),
        "webrtc_timeout_s": float(v.get("webrtc_timeout_s", 8)),
        "threshold": p.threshold,
        "alert_on": p.aggregator.on,
        "sparkline_points": int(v.get("sparkline_points", 30)),
        "streams": [p.describe(sid) for sid in p.streams],
    })


async def ws_stream(request: web.Request) -> web.WebSocketResponse:
    sid = request.match_info["stream"]
    hub = hub_for(request.app)
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    sub = hub.subscribe_events(sid)

    async def reader() -> None:
        async for _ in ws:
            pass
        sub.offer(None)

    rtask = asyncio.create_task(reader())
    try:
        p = request.app[PIPELINE]
        if sid in p.streams and "status" not in hub._view(sid).last:
            st = p.describe(sid)
            await ws.send_str(json.dumps({"type": "status", "topic": None, "payload": {"stream": sid, **st}}))
        for msg in hub.snapshot(sid):
            await ws.send_str(json.dumps(msg))
        while True:
            msg = await sub.get()
            if msg is None or ws.closed:
                break
            await ws.send_str(json.dumps(msg))
    except (ConnectionResetError, RuntimeError):
        pass
    finally:
        sub.close()
        rtask.cancel()
        await asyncio.gather(rtask, return_exceptions=True)
        await ws.close()
    return ws


def _encode_jpeg(image: Any, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


async def mjpeg_stream(request: web.Request) -> web.StreamResponse:
    """multipart/x-mixed-replace JPEGs; each part carries `X-Frame` and `X-PTS` for overlay matching."""
    sid = request.match_info["stream"]
    if sid not in request.app[PIPELINE].streams:
        return web.json_response({"error": f"no stream {sid!r}"}, status=404)
    vcfg = request.app[CONFIG].get("viewer", {}) or {}
    quality = int(vcfg.get("mjpeg_quality", 80))
    max_fps = vcfg.get("mjpeg_max_fps")
    min_gap = 1.0 / float(max_fps) if max_fps else 0.0
    sub = hub_for(request.app).subscribe_frames(sid)
    resp = web.StreamResponse(headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                       "Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    last = 0.0
    try:
        while True:
            vf = await sub.get()
            if vf is None:
                break
            if min_gap and loop.time() - last < min_gap:
                continue
            last = loop.time()
            if vf.jpeg is None:
                vf.jpeg = await asyncio.to_thread(_encode_jpeg, vf.image, quality)
            head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(vf.jpeg)}\r\n"
                    f"X-Frame: {vf.index}\r\nX-PTS: {vf.pts:.6f}\r\n\r\n").encode()
            await resp.write(head + vf.jpeg + b"\r\n")
    except ConnectionResetError:
        pass
    finally:
        sub.close()
    return resp


def register(app: web.Application) -> None:
    """Viewer routes; the FrameHub attaches to the pipeline's bus now (the app must hold PIPELINE)."""
    app.router.add_get("/viewer", viewer_page)
    app.router.add_get("/viewer/config", viewer_config)
    app.router.add_get("/viewer/static/{name}", viewer_static)
    app.router.add_get("/ws/{stream}", ws_stream)
    app.router.add_get("/mjpeg/{stream}", mjpeg_stream)
    hub_for(app)
