"""HTTP(S) progressive video and HLS playlists through FFmpeg (PyAV)."""

from __future__ import annotations

from typing import Any

import av

from stream.sources.base import PyAVSource


class HTTPSource(PyAVSource):
    """HTTP(S)/HLS input. A feed without a known duration (live HLS) reconnects on EOF; VOD ends."""

    live = True
    reconnect = True

    def open_container(self) -> Any:
        options = {"rw_timeout": str(int(self.read_timeout_s * 1e6))}
        return av.open(self.url, options=options, timeout=(self.open_timeout_s, self.read_timeout_s))

    def ended_normally(self, container: Any) -> bool:
        return container.duration is not None and container.duration > 0
