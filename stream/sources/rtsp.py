"""RTSP cameras through FFmpeg (PyAV): TCP interleaved first, UDP as fallback."""

from __future__ import annotations

import logging
from typing import Any

import av

from stream.sources.base import PyAVSource

log = logging.getLogger("stream.sources")


class RTSPSource(PyAVSource):
    """An RTSP stream; reconnects forever with backoff (policy) and remembers the working transport.

    TCP goes first because it survives NAT and packet loss without smearing; a server
    that refuses interleaved TCP gets a UDP attempt in the same connection round.
    """

    live = True
    reconnect = True

    def __init__(self, *args: Any, transports: tuple[str, ...] = ("tcp", "udp"), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transports = list(transports)
        self.transport: str | None = None

    def open_container(self) -> Any:
        order = ([self.transport] if self.transport else []) + [t for t in self.transports if t != self.transport]
        last: Exception | None = None
        for transport in order:
            if self.stopped:
                break
            options = {
                "rtsp_transport": transport,
                # Socket I/O timeout of FFmpeg's RTSP demuxer, in microseconds.
                "timeout": str(int(self.read_timeout_s * 1e6)),
                "fflags": "nobuffer",
            }
            try:
                container = av.open(
                    self.url, options=options, timeout=(self.open_timeout_s, self.read_timeout_s)
                )
            except (av.error.ConnectionRefusedError, av.error.HTTPUnauthorizedError, av.error.HTTPNotFoundError) as exc:
                raise exc  # the transport is not the problem: no point trying the other one
            except Exception as exc:  # noqa: BLE001 - try the next transport
                log.debug("stream %s: RTSP over %s failed: %s", self.stream_id, transport, exc)
                last = exc
                continue
            self.transport = transport
            return container
        raise last or RuntimeError("stopped")
