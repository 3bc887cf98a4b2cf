"""V4L2 webcams (`/dev/videoN`) through FFmpeg's v4l2 demuxer (PyAV)."""

from __future__ import annotations

from typing import Any

import av

from stream.sources.base import PyAVSource


class V4L2Source(PyAVSource):
    """A webcam; reconnects (e.g. after an unplug) like a network camera."""

    live = True
    reconnect = True

    def __init__(self, *args: Any, video_size: str | None = None, framerate: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.video_size = video_size
        self.framerate = framerate

    def open_container(self) -> Any:
        options: dict[str, str] = {}
        if self.video_size:
            options["video_size"] = self.video_size
        if self.framerate:
            options["framerate"] = str(self.framerate)
        device = self.url.removeprefix("v4l2://")
        return av.open(device, format="v4l2", options=options, timeout=(self.open_timeout_s, self.read_timeout_s))
