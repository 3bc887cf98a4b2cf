"""WebRTC for the analyzer: WHIP ingest (calls in), WHEP egress (viewer video out), a WHIP client.

`register(app)` adds the WHIP and WHEP routes to the analyzer's aiohttp application
(it is one of StreamApp's default route hooks). aiortc is imported lazily so the rest
of the analyzer works where it is missing.
"""

from __future__ import annotations

from aiohttp import web


def register(app: web.Application) -> None:
    """Add `POST /whip/{stream}` (+ session resources) and `POST /whep/{stream}` to `app`."""
    from stream.webrtc.whep import register as register_whep
    from stream.webrtc.whip import register as register_whip

    register_whip(app)
    register_whep(app)
