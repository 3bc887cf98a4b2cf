"""WHIP ingest (RFC 9725): a WebRTC call becomes a live stream of the pipeline.

`POST /whip/{stream}` (application/sdp offer) -> 201 + SDP answer + `Location:
/whip/{stream}/{session}`; `DELETE` on that resource hangs up. The received video
track is decoded by aiortc and pushed into a `PushSource`, so resampling and the
drop-oldest policy are those of every other live source; audio is read and
discarded. A peer that stops sending (vanished, ICE failure) ends the stream with
status `ended` after `webrtc.media_timeout_s`: nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from stream.frames import Frame
from stream.http import CONFIG, PIPELINE
from stream.pipeline import check_stream_id
from stream.queues import StageQueue
from stream.sources.push import PushSource
from stream.webrtc.common import WebRTCConfig, check_token, cors_headers, read_sdp

log = logging.getLogger("stream.webrtc.whip")

WHIP_SESSIONS: web.AppKey[dict] = web.AppKey("whip_sessions", dict)
SESSION_METHODS = "OPTIONS, DELETE, PATCH"
POST_METHODS = "OPTIONS, POST"


class WhipSource(PushSource):
    """A PushSource whose end carries the reason (`ended` + error text when the peer vanished)."""

    end_reason: str | None = None

    async def run(self, out: StageQueue[Frame]) -> None:
        self._out = out
        self.report("starting")
        await self._ended.wait()
        self._out = None
        self.report("ended", error=self.end_reason)


class WhipSession:
    """One call: its peer connection, its source, and the task that moves frames from aiortc to the source."""

    def __init__(self, app: web.Application, stream_id: str, pc: Any, source: WhipSource, wcfg: WebRTCConfig) -> None:
        self.id = uuid.uuid4().hex
        self.app = app
        self.stream_id = stream_id
        self.pc = pc
        self.source = source
        self.wcfg = wcfg
        self.video: asyncio.Future = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task | None = None
        self.closed = False
        self.frames = 0
        self.codec: str | None = None
        self._drains: list[asyncio.Task] = []

    @property
    def location(self) -> str:
        return f"/whip/{self.stream_id}/{self.id}"

    def on_track(self, track: Any) -> None:
        if track.kind == "video" and not self.video.done():
            self.video.set_result(track)
        else:  # audio (or a second video): read and discard so aiortc's buffers stay empty
            self._drains.append(asyncio.ensure_future(_drain(track)))

    def on_state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed") and not self.closed:
            asyncio.ensure_future(self.close(f"peer connection {state}"))

    async def run(self) -> None:
        """Receive video until the peer hangs up or stops sending; then end the stream."""
        from aiortc.mediastreams import MediaStreamError

        reason = "call ended"
        try:
            track = await asyncio.wait_for(self.video, self.wcfg.connect_timeout_s)
            first = True
            last_pts: float | None = None
            while True:
                timeout = self.wcfg.connect_timeout_s if first else self.wcfg.media_timeout_s
                frame = await asyncio.wait_for(track.recv(), timeout)
                first = False
                image = await asyncio.to_thread(frame.to_ndarray, format="rgb24")
                pts = float(frame.time) if frame.time is not None else time.monotonic()
                if last_pts is not None and pts < last_pts - 1.0:  # the sender restarted its clock
                    self.source.resampler.reset()
                last_pts = pts
                self.frames += 1
                if self.source.stopped:  # removed through DELETE /streams: hang up
                    reason = "stream removed"
                    break
                self.source.push(image, pts)
        except asyncio.TimeoutError:
            reason = (f"no video from the peer for {self.wcfg.media_timeout_s:g} s (peer gone)" if self.frames
                      else f"no video within {self.wcfg.connect_timeout_s:g} s of the offer")
        except MediaStreamError:
            reason = "the peer ended the video track"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken call ends that stream, never the analyzer
            log.exception("stream %s: WHIP session failed", self.stream_id)
            reason = f"WHIP session failed: {exc}"
        await self.close(reason, from_task=True)

    async def close(self, reason: str | None, *, from_task: bool = False) -> None:
        """Idempotent: end the source (status `ended`), remove the stream, close the peer connection."""
        if self.closed:
            return
        self.closed = True
        log.info("stream %s: WHIP session %s closed (%s)", self.stream_id, self.id[:8], reason)
        self.source.end_reason = None if reason in ("DELETE", "shutdown") else reason
        sessions = self.app[WHIP_SESSIONS]
        sessions.pop(self.id, None)
        if self.task is not None and not from_task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for t in self._drains:
            t.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        pipeline = self.app[PIPELINE]
        h = pipeline.streams.get(self.stream_id)
        if h is not None and h.source is self.source:
            await pipeline.remove_stream(self.stream_id, reason=reason or "ended", wait=False)
        with contextlib.suppress(Exception):
            await self.pc.close()


async def _drain(track: Any) -> None:
    with contextlib.suppress(Exception):
        while True:
            await track.recv()


def _wcfg(request: web.Request) -> WebRTCConfig:
    return WebRTCConfig.from_config(request.app[CONFIG])


async def whip_options(request: web.Request) -> web.Response:
    wcfg = _wcfg(request)
    methods = SESSION_METHODS if "session" in request.match_info else POST_METHODS
    headers = {**cors_headers(wcfg, methods), "Allow": methods}
    if "session" not in request.match_info:
        headers["Accept-Post"] = "application/sdp"
    return web.Response(status=204, headers=headers)


async def whip_post(request: web.Request) -> web.Response:
    """An SDP offer in, the answer out; the call is a new live stream named by the path."""
    wcfg = _wcfg(request)
    cors = cors_headers(wcfg, POST_METHODS)
    if not wcfg.enabled:
        return web.json_response({"error": "WebRTC is disabled (webrtc.enabled)"}, status=404, headers=cors)
    denied = check_token(request, wcfg.token)
    if denied is not None:
        denied.headers.update(cors)
        return denied
    sid = request.match_info["stream"]
    try:
        check_stream_id(sid)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400, headers=cors)
    sdp, bad = await read_sdp(request)
    if bad is not None:
        bad.headers.update(cors)
        return bad
    pipeline = request.app[PIPELINE]
    sessions = request.app[WHIP_SESSIONS]
    if pipeline.id_taken(sid):
        return web.json_response({"error": f"stream {sid!r} already exists"}, status=409, headers=cors)
    if len(sessions) >= wcfg.max_sessions:
        return web.json_response({"error": "too many WHIP sessions"}, status=503, headers=cors)

    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(wcfg.rtc_configuration())
    peer = request.remote or "?"
    source = WhipSource(sid, f"whip://{peer}", target_fps=(request.app[CONFIG].get("stream") or {}).get("target_fps", 30))
    session = WhipSession(request.app, sid, pc, source, wcfg)
    pc.on("track", session.on_track)
    pc.on("connectionstatechange", session.on_state)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        video = [t for t in pc.getTransceivers() if t.kind == "video"]
        if not video or not getattr(video[0], "_codecs", True):
            raise ValueError("no supported video codec in the offer (H264 or VP8)")
        for t in pc.getTransceivers():
            t.direction = "recvonly"
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except Exception as exc:  # noqa: BLE001 - aiortc raises many types for a bad offer
        await pc.close()
        return web.json_response({"error": f"malformed or unsupported SDP offer: {exc}"}, status=400, headers=cors)
    if pipeline.id_taken(sid):  # raced with another POST while negotiating
        await pc.close()
        return web.json_response({"error": f"stream {sid!r} already exists"}, status=409, headers=cors)
    pipeline.add_stream(sid, source.url, source=source)
    sessions[session.id] = session
    session.task = asyncio.create_task(session.run(), name=f"whip:{sid}")
    log.info("stream %s: WHIP call from %s (session %s)", sid, peer, session.id[:8])
    headers = {**cors, "Location": session.location, "ETag": f'"{session.id}"',
               "Content-Type": "application/sdp"}
    resp = web.Response(status=201, text=pc.localDescription.sdp, headers=headers)
    for link in wcfg.link_headers():
        resp.headers.add("Link", link)
    return resp


def _session(request: web.Request) -> WhipSession | None:
    s = request.app[WHIP_SESSIONS].get(request.match_info["session"])
    return s if s is not None and s.stream_id == request.match_info["stream"] else None


async def whip_delete(request: web.Request) -> web.Response:
    wcfg = _wcfg(request)
    cors = cors_headers(wcfg, SESSION_METHODS)
    denied = check_token(request, wcfg.token)
    if denied is not None:
        denied.headers.update(cors)
        return denied
    session = _session(request)
    if session is None:
        return web.json_response({"error": "no such WHIP session"}, status=404, headers=cors)
    await session.close("DELETE")
    return web.Response(status=200, headers=cors)


async def whip_patch(request: web.Request) -> web.Response:
    """Trickle ICE / ICE restart are not supported (the answer carries every candidate): RFC 9725 §4.3.1."""
    return web.json_response({"error": "trickle ICE and ICE restarts are not supported"}, status=405,
                             headers={**cors_headers(_wcfg(request), SESSION_METHODS), "Allow": "OPTIONS, DELETE"})


async def _close_all(app: web.Application) -> None:
    for s in list(app[WHIP_SESSIONS].values()):
        await s.close("shutdown")


def register(app: web.Application) -> None:
    app[WHIP_SESSIONS] = {}
    app.router.add_route("OPTIONS", "/whip/{stream}", whip_options)
    app.router.add_post("/whip/{stream}", whip_post)
    app.router.add_route("OPTIONS", "/whip/{stream}/{session}", whip_options)
    app.router.add_delete("/whip/{stream}/{session}", whip_delete)
    app.router.add_route("PATCH", "/whip/{stream}/{session}", whip_patch)
    app.on_shutdown.append(_close_all)
