"""Shared WebRTC plumbing: config, ICE servers, bearer check, CORS headers, SDP sanity checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_SDP_BYTES = 64 * 1024


@dataclass
class WebRTCConfig:
    """The `webrtc:` section of the config (see configs/default.yaml)."""

    enabled: bool = True
    token: str | None = None
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    connect_timeout_s: float = 15.0
    media_timeout_s: float = 10.0
    max_sessions: int = 16
    cors_origin: str = "*"

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> WebRTCConfig:
        w = cfg.get("webrtc", {}) or {}
        return cls(
            enabled=bool(w.get("enabled", True)),
            token=w.get("token"),
            ice_servers=list(w.get("ice_servers") or []),
            connect_timeout_s=float(w.get("connect_timeout_s", 15.0)),
            media_timeout_s=float(w.get("media_timeout_s", 10.0)),
            max_sessions=int(w.get("max_sessions", 16)),
            cors_origin=str(w.get("cors_origin", "*")),
        )

    def rtc_configuration(self) -> Any:
        """aiortc configuration. An empty list matters: aiortc's default would add a public STUN server."""
        from aiortc import RTCConfiguration, RTCIceServer

        servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
                   for s in self.ice_servers]
        return RTCConfiguration(iceServers=servers)

    def link_headers(self) -> list[str]:
        """RFC 9725 §4.6: ICE servers offered to the client as Link headers."""
        out = []
        for s in self.ice_servers:
            urls = s["urls"] if isinstance(s["urls"], list) else [s["urls"]]
            for url in urls:
                link = f'<{url}>; rel="ice-server"'
                if s.get("username"):
                    link += f'; username="{s["username"]}"; credential="{s.get("credential", "")}"'
                    link += '; credential-type="password"'
                out.append(link)
        return out


def cors_headers(wcfg: WebRTCConfig, methods: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": wcfg.cors_origin,
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
        "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Patch",
    }


def check_token(request: web.Request, token: str | None) -> web.Response | None:
    """A 401 response when `token` is set and the request lacks `Authorization: Bearer <token>`."""
    if not token:
        return None
    got = request.headers.get("Authorization", "").encode()
    if hmac.compare_digest(got, f"Bearer {token}".encode()):
        return None
    return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                             headers={"WWW-Authenticate": "Bearer"})


def sdp_problem(sdp: str, kind: str = "video") -> str | None:
    """Why `sdp` is not a usable offer (None when it looks like one): aiortc's parser is lenient."""
    lines = [ln.strip() for ln in sdp.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or lines[0] != "v=0":
        return "not an SDP document (must start with v=0)"
    if not any(ln.startswith(f"m={kind} ") for ln in lines):
        return f"the offer has no {kind} media section"
    if not any(ln.startswith("a=fingerprint:") for ln in lines):
        return "the offer has no DTLS fingerprint"
    if not any(ln.startswith("a=ice-ufrag:") for ln in lines):
        return "the offer has no ICE credentials"
    return None


async def read_sdp(request: web.Request) -> tuple[str | None, web.Response | None]:
    """The request body as an SDP offer, or an error response (415 wrong type, 400 malformed)."""
    if request.content_type != "application/sdp":
        return None, web.json_response({"error": "Content-Type must be application/sdp"}, status=415)
    if (request.content_length or 0) > MAX_SDP_BYTES:
        return None, web.json_response({"error": "SDP offer too large"}, status=413)
    raw = await request.content.read(MAX_SDP_BYTES + 1)
    if len(raw) > MAX_SDP_BYTES:
        return None, web.json_response({"error": "SDP offer too large"}, status=413)
    try:
        sdp = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, web.json_response({"error": "malformed SDP offer: not UTF-8"}, status=400)
    problem = sdp_problem(sdp)
    if problem:
        return None, web.json_response({"error": f"malformed SDP offer: {problem}"}, status=400)
    return sdp, None
