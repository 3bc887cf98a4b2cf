"""Local video files: paced by PTS like a camera (`realtime`) or as fast as the pipeline takes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av

from stream.sources.base import PyAVSource


class FileSource(PyAVSource):
    """A local file. Fast mode never drops (back-pressure); realtime mode behaves like a live camera."""

    reconnect = False

    def __init__(self, *args: Any, realtime: bool = False, max_frames: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.realtime = realtime
        self.live = realtime
        self.max_frames = max_frames

    def open_container(self) -> Any:
        path = Path(self.url.removeprefix("file://"))
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        return av.open(str(path))

    def ended_normally(self, container: Any) -> bool:
        return True
