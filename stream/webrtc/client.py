"""A small WHIP client (aiortc): sends a local video file to a WHIP endpoint, like a call would.

Used by `ftcn-stream publish` and by the tests. The file is decoded by aiortc's
MediaPlayer (paced in real time), optionally downscaled, and sent as the only video
track; audio is not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from fractions import Fraction
from typing import Any
from urllib.parse import urljoin

import aiohttp

log = logging.getLogger("stream.webrtc.client")


class WhipError(RuntimeError):
    """The WHIP endpoint refused the offer (status and body in the message)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"WHIP endpoint answered {status}: {text.strip()[:300]}")
        self.status = status


def _outgoing_track(track: Any, width: int | None) -> Any:
    """`track` with strictly increasing PTS (a looped file restarts at 0, which VP8 refuses),
    optionally scaled to `width` px wide (even height, aspect kept)."""
    from aiortc import MediaStreamTrack

    class Outgoing(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.offset = 0
            self.last: int | None = None

        async def recv(self) -> Any:
            frame = await track.recv()
            tb = frame.time_base or Fraction(1, 90000)
            pts = frame.pts if frame.pts is not None else (self.last or 0) + 1
            if self.last is not None and pts + self.offset <= self.last:
                self.offset = self.last - pts + max(1, round(1 / (30 * tb)))
            if width and frame.width > width:
                height = max(2, round(frame.height * width / frame.width / 2) * 2)
                frame = frame.reformat(width=width, height=height)
            frame.pts, frame.time_base = pts + self.offset, tb
            self.last = frame.pts
            return frame

        def stop(self) -> None:
            super().stop()
            track.stop()

    return Outgoing()


class WhipClient:
    """`await start()` posts the offer and connects; `await stop()` hangs up (DELETE); `wait()` until the file ends."""

    def __init__(self, url: str, file: str, *, token: str | None = None, width: int | None = None,
                 loop: bool = False, codec: str | None = None, ice_servers: list[dict] | None = None) -> None:
        self.url = url
        self.file = file
        self.token = token
        self.width = width
        self.loop = loop
        self.codec = codec
        self.ice_servers = ice_servers or []
        self.pc: Any = None
        self.player: Any = None
        self.location: str | None = None
        self.answer: str | None = None
        self._ended: asyncio.Event | None = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    async def start(self) -> None:
        from aiortc import (
            RTCConfiguration,
            RTCIceServer,
            RTCPeerConnection,
            RTCRtpSender,
            RTCSessionDescription,
        )
        from aiortc.contrib.media import MediaPlayer

        self._ended = asyncio.Event()
        self.player = MediaPlayer(self.file, loop=self.loop)
        if self.player.video is None:
            raise ValueError(f"{self.file}: no video stream")
        servers = [RTCIceServer(**s) for s in self.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        track = _outgoing_track(self.player.video, self.width)
        sender = self.pc.addTransceiver(track, direction="sendonly").sender
        if self.codec:
            caps = RTCRtpSender.getCapabilities("video").codecs
            prefs = [c for c in caps if c.mimeType.lower() == f"video/{self.codec.lower()}"]
            if not prefs:
                raise ValueError(f"codec {self.codec} not available (H264 or VP8)")
            tr = next(t for t in self.pc.getTransceivers() if t.sender is sender)
            tr.setCodecPreferences(prefs + [c for c in caps if c.mimeType.lower() == "video/rtx"])

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            log.info("WHIP connection %s", self.pc.connectionState)
            if self.pc.connectionState in ("failed", "closed") and self._ended is not None:
                self._ended.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession() as http, http.post(
            self.url, data=self.pc.localDescription.sdp.encode(),
            headers=self._headers({"Content-Type": "application/sdp"}),
        ) as r:
            text = await r.text()
            if r.status != 201:
                await self.pc.close()
                raise WhipError(r.status, text)
            self.location = urljoin(self.url, r.headers.get("Location", ""))
            self.answer = text
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))

        self.player.video.on("ended", self._ended.set)

    async def wait(self, timeout: float | None = None) -> None:
        """Until the file ends (never with loop=True) or the connection fails/closes."""
        assert self._ended is not None
        await asyncio.wait_for(self._ended.wait(), timeout)

    async def stop(self, delete: bool = True) -> int | None:
        """Hang up: DELETE the session resource (returns its status), close the peer connection."""
        status = None
        if delete and self.location:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with aiohttp.ClientSession() as http, http.delete(
                    self.location, headers=self._headers(), timeout=aiohttp.ClientTimeout(total=10)
                ) as r:
                    status = r.status
        if self.pc is not None:
            await self.pc.close()
        if self.player is not None and self.player.video is not None:
            self.player.video.stop()
        return status
