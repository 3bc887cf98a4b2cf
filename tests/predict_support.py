"""Shared pieces of the /predict tests: a local origin server, a gated stand-in analyzer, app runners.

The origin server is a real aiohttp server on 127.0.0.1 (no internet): it serves a real video,
oversize bodies (with and without Content-Length), redirects, slow answers and error statuses,
and records every request so tests can prove that refused targets were never contacted.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ftcn.config import load_config
from ftcn.predict_service import PredictService, create_app


def serve_cfg(**serve: Any) -> dict[str, Any]:
    """The default config with `serve:` overrides."""
    return load_config(overrides={"serve": serve})


class StandInAnalyzer:
    """Analyzer-shaped stand-in for tests of refusals and queueing (no model time).

    Records what it was asked to analyse (and the bytes of the file at that moment); when
    `gate` is given, blocks in the worker thread until the test sets it.
    """

    def __init__(self, gate: threading.Event | None = None, fail: Exception | None = None) -> None:
        self.gate = gate
        self.fail = fail
        self.started = threading.Event()
        self.calls: list[dict[str, Any]] = []

    def analyze(self, video_path: str | Path, **kwargs: Any) -> dict[str, Any]:
        data = Path(video_path).read_bytes()
        self.calls.append({"path": Path(video_path), "bytes": data, **kwargs})
        self.started.set()
        if self.gate is not None and not self.gate.wait(30):
            raise TimeoutError("test gate never opened")
        if self.fail is not None:
            raise self.fail
        return {
            "prediction": "REAL",
            "df_probability": 0.25,
            "threshold": 0.5,
            "model": {"id": "stand_in", "sha256": "0" * 64},
            "num_frames": 1,
            "fps": 25.0,
            "stride": 1,
            "num_clips": 1,
            "num_tracks": 0,
            "tracks": [],
            "timings": {"batch_size": kwargs.get("batch_size") or 4},
        }


class Origin:
    """A local HTTP origin for download tests; `hits` lists the paths it was asked for."""

    def __init__(self, video: Path | None = None) -> None:
        self.video_bytes = video.read_bytes() if video is not None else b"\x00" * 1000
        self.hits: list[str] = []
        self.app = web.Application()
        r = self.app.router
        r.add_get("/video.mp4", self._video)
        r.add_get("/notes.txt", self._text)
        r.add_get("/big", self._big)
        r.add_get("/chunked", self._chunked)
        r.add_get("/redirect", self._redirect)
        r.add_get("/loop", self._loop)
        r.add_get("/slow", self._slow)
        r.add_get("/missing", self._missing)
        self.server: TestServer | None = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        assert self.server is not None
        return f"http://{host}:{self.server.port}{path}"

    def _hit(self, request: web.Request) -> None:
        self.hits.append(request.path_qs)

    async def _video(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.Response(body=self.video_bytes, content_type="video/mp4")

    async def _text(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.Response(text="just some notes, not a video\n" * 10)

    async def _big(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.Response(body=b"\x00" * 200_000, content_type="video/mp4")

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        self._hit(request)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for _ in range(50):
                await resp.write(b"\x00" * 8192)
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client hung up on purpose
        return resp

    async def _redirect(self, request: web.Request) -> web.Response:
        self._hit(request)
        raise web.HTTPFound(request.query["to"])

    async def _loop(self, request: web.Request) -> web.Response:
        self._hit(request)
        raise web.HTTPFound("/loop")

    async def _slow(self, request: web.Request) -> web.Response:
        self._hit(request)
        await asyncio.sleep(5)
        return web.Response(body=self.video_bytes)

    async def _missing(self, request: web.Request) -> web.Response:
        self._hit(request)
        raise web.HTTPNotFound()


@asynccontextmanager
async def running(origin: Origin) -> AsyncIterator[Origin]:
    origin.server = TestServer(origin.app, host="127.0.0.1")
    await origin.server.start_server()
    try:
        yield origin
    finally:
        await origin.server.close()


@asynccontextmanager
async def predict_client(service: PredictService) -> AsyncIterator[TestClient]:
    """A real server on 127.0.0.1 with the standalone predict app, and a client for it."""
    client = TestClient(TestServer(create_app(service), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def post_predict(client: TestClient, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/predict", json=body, **kwargs)
    return resp.status, await resp.json()
