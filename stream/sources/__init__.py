"""Stream sources: one module per kind, one interface (`stream.sources.base.Source`)."""

from __future__ import annotations

from typing import Any

from stream.sources.base import PyAVSource, ReconnectPolicy, Source, SourceStatus, StatusCallback, redact_url
from stream.sources.file import FileSource
from stream.sources.http import HTTPSource
from stream.sources.push import PushSource
from stream.sources.rtsp import RTSPSource
from stream.sources.v4l2 import V4L2Source

__all__ = [
    "FileSource",
    "HTTPSource",
    "PushSource",
    "PyAVSource",
    "ReconnectPolicy",
    "RTSPSource",
    "Source",
    "SourceStatus",
    "V4L2Source",
    "make_source",
    "redact_url",
]


def make_source(
    stream_id: str,
    url: str,
    stream_cfg: dict[str, Any],
    *,
    on_status: StatusCallback | None = None,
    realtime: bool | None = None,
    max_frames: int | None = None,
) -> Source:
    """Pick the source class from the URL scheme (rtsp, http(s), /dev/video*, file path)."""
    common: dict[str, Any] = {
        "target_fps": stream_cfg.get("target_fps", 30),
        "on_status": on_status,
        "open_timeout_s": float(stream_cfg.get("open_timeout_s", 5.0)),
        "read_timeout_s": float(stream_cfg.get("read_timeout_s", 5.0)),
        "policy": ReconnectPolicy.from_config(stream_cfg.get("reconnect")),
    }
    lower = url.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        return RTSPSource(stream_id, url, transports=tuple(stream_cfg.get("rtsp_transports", ("tcp", "udp"))), **common)
    if lower.startswith(("http://", "https://")):
        return HTTPSource(stream_id, url, **common)
    if lower.startswith("/dev/video") or lower.startswith("v4l2://"):
        return V4L2Source(stream_id, url, **common)
    if lower.startswith("push://"):
        return PushSource(stream_id, url, target_fps=common["target_fps"], on_status=on_status)
    rt = bool(stream_cfg.get("realtime", False)) if realtime is None else realtime
    return FileSource(stream_id, url, realtime=rt, max_frames=max_frames, **common)
