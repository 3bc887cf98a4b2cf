"""WHEP-style egress for the viewer: the analyzed frames of a stream as a WebRTC video track.

`POST /whep/{stream}` takes the browser's recvonly offer and answers with a track fed
by the viewer's FrameHub: the same frames the overlay boxes were computed on, sent
right after detection. Each frame leaves with RTP timestamp `origin + 90000 * (pts -
pts0)`; `GET /whep/{stream}/{session}` tells the page `origin` and `pts0`, so it can
turn `requestVideoFrameCallback`'s `rtpTimestamp` back into the source PTS and draw
the boxes of exactly the frame on screen (docs/webrtc.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from fractions import Fraction
from typing import Any

from aiohttp import web

from stream.http import CONFIG, PIPELINE
from stream.viewer import hub_for
from stream.webrtc.common import WebRTCConfig, check_token, cors_headers, read_sdp

log = logging.getLogger("stream.webrtc.whep")

WHEP_SESSIONS: web.AppKey[dict] = web.AppKey("whep_sessions", dict)
CLOCK = 90000
TIME_BASE = Fraction(1, CLOCK)


def make_track(frames: Any) -> Any:
    """A video track that sends what `frames` (a FrameHub subscription) yields, with PTS-derived timestamps."""
    import av
    from aiortc import MediaStreamTrack

    class HubTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.sender: Any = None
            self.pts0: float | None = None
            self.last_ts: int | None = None
            self.rtp_origin: int | None = None
            self.sent = 0

        async def recv(self) -> Any:
            vf = await frames.get()
            if vf is None:
                self.stop()
                from aiortc.mediastreams import MediaStreamError

                raise MediaStreamError
            self._learn_origin()
            if self.pts0 is None:
                self.pts0 = vf.pts
            ts = round((vf.pts - self.pts0) * CLOCK)
            if self.last_ts is not None and ts <= self.last_ts:
                # PTS went back (source reconnected): keep RTP time moving; the mapping is re-announced.
                self.pts0 = vf.pts - (self.last_ts + CLOCK // 30) / CLOCK
                ts = round((vf.pts - self.pts0) * CLOCK)
            frame = await asyncio.to_thread(av.VideoFrame.from_ndarray, vf.image, format="rgb24")
            frame.pts, frame.time_base = ts, TIME_BASE
            self.last_ts = ts
            self.sent += 1
            return frame

        def _learn_origin(self) -> None:
            # aiortc adds a random 32-bit origin to every timestamp. When the next frame is requested the
            # previous one has been packetized, so the last sent RTP timestamp minus its media
            # timestamp is that origin.
            if self.rtp_origin is not None or self.last_ts is None or self.sender is None:
                return
            rtp = getattr(self.sender, "_RTCRtpSender__rtp_timestamp", None)
            if rtp:
                self.rtp_origin = (int(rtp) - self.last_ts) % (1 << 32)

    return HubTrack()


class WhepSession:
    def __init__(self, stream_id: str, pc: Any, track: Any, sub: Any) -> None:
        self.id = uuid.uuid4().hex
        self.stream_id = stream_id
        self.pc = pc
        self.track = track
        self.sub = sub
        self.closed = False

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sub.close()
        with contextlib.suppress(Exception):
            await self.pc.close()


async def whep_options(request: web.Request) -> web.Response:
    wcfg = WebRTCConfig.from_config(request.app[CONFIG])
    return web.Response(status=204, headers={**cors_headers(wcfg, "OPTIONS, POST, GET, DELETE"),
                                             "Accept-Post": "application/sdp"})


async def whep_post(request: web.Request) -> web.Response:
    wcfg = WebRTCConfig.from_config(request.app[CONFIG])
    cors = cors_headers(wcfg, "OPTIONS, POST")
    if not wcfg.enabled:
        return web.json_response({"error": "WebRTC is disabled (webrtc.enabled): use /mjpeg"}, status=404,
                                 headers=cors)
    denied = check_token(request, wcfg.token)
    if denied is not None:
        return denied
    sid = request.match_info["stream"]
    if sid not in request.app[PIPELINE].streams:
        return web.json_response({"error": f"no stream {sid!r}"}, status=404, headers=cors)
    sdp, bad = await read_sdp(request)
    if bad is not None:
        return bad
    sessions = request.app[WHEP_SESSIONS]
    if len(sessions) >= wcfg.max_sessions:
        return web.json_response({"error": "too many WHEP sessions"}, status=503, headers=cors)

    from aiortc import RTCPeerConnection, RTCSessionDescription

    sub = hub_for(request.app).subscribe_frames(sid)
    track = make_track(sub)
    pc = RTCPeerConnection(wcfg.rtc_configuration())
    session = WhepSession(sid, pc, track, sub)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        track.sender = pc.addTrack(track)
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # noqa: BLE001
        await session.close()
        return web.json_response({"error": f"malformed or unsupported SDP offer: {exc}"}, status=400, headers=cors)

    @pc.on("connectionstatechange")
    async def _state() -> None:
        if pc.connectionState in ("failed", "closed"):
            sessions.pop(session.id, None)
            await session.close()

    sessions[session.id] = session
    return web.Response(status=201, text=pc.localDescription.sdp,
                        headers={**cors, "Location": f"/whep/{sid}/{session.id}", "Content-Type": "application/sdp"})


def _session(request: web.Request) -> WhepSession | None:
    s = request.app[WHEP_SESSIONS].get(request.match_info["session"])
    return s if s is not None and s.stream_id == request.match_info["stream"] else None


async def whep_get(request: web.Request) -> web.Response:
    """The RTP-timestamp -> PTS mapping of this session's video (null until the first frames went out)."""
    s = _session(request)
    if s is None:
        return web.json_response({"error": "no such WHEP session"}, status=404)
    t = s.track
    return web.json_response({"stream": s.stream_id, "clock": CLOCK, "rtp_origin": t.rtp_origin, "pts0": t.pts0,
                              "frames_sent": t.sent})


async def whep_delete(request: web.Request) -> web.Response:
    s = _session(request)
    if s is None:
        return web.json_response({"error": "no such WHEP session"}, status=404)
    request.app[WHEP_SESSIONS].pop(s.id, None)
    await s.close()
    return web.Response(status=200)


async def _close_all(app: web.Application) -> None:
    for s in list(app[WHEP_SESSIONS].values()):
        await s.close()
    app[WHEP_SESSIONS].clear()


def register(app: web.Application) -> None:
    app[WHEP_SESSIONS] = {}
    hub_for(app)
    app.router.add_route("OPTIONS", "/whep/{stream}", whep_options)
    app.router.add_post("/whep/{stream}", whep_post)
    app.router.add_get("/whep/{stream}/{session}", whep_get)
    app.router.add_delete("/whep/{stream}/{session}", whep_delete)
    app.on_shutdown.append(_close_all)
