"""TrueMedia-compatible `GET /healthcheck` and `POST /predict` on any aiohttp application.

`/predict` takes `{"file_path": <http(s) URL or local path>}`, vets it with
`ftcn.safe_fetch`, and runs `Analyzer.analyze` -- the same code path as
`ftcn-stream analyze` -- in a worker thread, so the event loop (and with it
/healthcheck and the live analyzer sharing the server) stays responsive. Admitted
jobs (downloading, waiting or running) are bounded; beyond the bound the answer is
429. Every refusal is a 4xx JSON `{"error", "reason"}`, every unexpected failure a
500 JSON without a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from ftcn import __version__
from ftcn.errors import InputError
from ftcn.safe_fetch import FetchPolicy, Refusal, confine_local_path, download, is_url

log = logging.getLogger(__name__)

TOKEN_ENV = "FTCN_API_TOKEN"
MAX_BATCH_SIZE = 64
MAX_FILE_PATH_CHARS = 4096


class AnalyzerLike(Protocol):
    """What the service needs from `ftcn.analyze.Analyzer` (tests of refusals may pass a stand-in)."""

    def analyze(
        self,
        video_path: str | Path,
        out_dir: str | Path | None = None,
        stride: int | None = None,
        max_frames: int | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        write_video: bool = True,
        write_plot: bool = True,
    ) -> dict[str, Any]: ...


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _describe(analyzer: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Static facts about the loaded model for /healthcheck."""
    checkpoint = getattr(analyzer, "checkpoint", None)
    return {
        "model": {
            "id": getattr(analyzer, "model_id", cfg["model"]["id"]),
            "version": __version__,
            "checkpoint": Path(checkpoint).name if checkpoint else None,
            "sha256": getattr(analyzer, "model_sha256", None),
            "threshold": getattr(analyzer, "threshold", None),
        },
        "face_detector": {
            "name": "retinaface_mobilenet0.25",
            "weights": Path(w).name if (w := getattr(analyzer, "detector_weights", None)) else None,
        },
        "engine": getattr(analyzer, "engine", None) or "torch",
        "device": str(getattr(analyzer, "device", "unknown")),
        "align_backend": getattr(analyzer, "align_backend", None),
    }


def _track_summary(track: dict[str, Any], fps: float | None) -> dict[str, Any]:
    """A track without its per-clip and per-frame lists, with times in seconds."""
    first, last = track.get("first_frame"), track.get("last_frame")
    return {
        "track_id": track.get("track_id"),
        "first_frame": first,
        "last_frame": last,
        "start_s": round(first / fps, 3) if fps and first is not None else None,
        "end_s": round((last + 1) / fps, 3) if fps and last is not None else None,
        "num_frames": track.get("num_frames"),
        "num_clips": len(track.get("clips") or []),
        "mirror_padded": track.get("mirror_padded"),
        "score": track.get("score"),
        "prediction": track.get("prediction"),
    }


class PredictService:
    """Validates /predict requests, fetches inputs safely and queues analysis jobs."""

    def __init__(self, cfg: dict[str, Any], analyzer: AnalyzerLike) -> None:
        serve = cfg.get("serve") or {}
        self.cfg = cfg
        self.analyzer = analyzer
        self.policy = FetchPolicy.from_config(serve)
        self.max_duration_s = float(serve["max_duration_s"]) if serve.get("max_duration_s") else None
        self.max_frames_limit = int(serve["max_frames_limit"]) if serve.get("max_frames_limit") else None
        self.max_concurrent = max(1, int(serve.get("max_concurrent_jobs", 1)))
        self.queue_limit = max(0, int(serve.get("queue_limit", 4)))
        self.max_request_bytes = int(serve.get("max_request_bytes", 65536))
        self.token: str | None = serve.get("token") or os.environ.get(TOKEN_ENV) or None
        self.info = _describe(analyzer, cfg)
        self.started = time.monotonic()
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self.completed = 0
        self.failed = 0

    @classmethod
    def from_config(
        cls,
        cfg: dict[str, Any],
        checkpoint: str | Path | None = None,
        device: str | None = None,
        detector_weights: str | Path | None = None,
    ) -> PredictService:
        """Load the real `Analyzer` (model + detector) once and wrap it."""
        from ftcn.analyze import Analyzer

        return cls(cfg, Analyzer(cfg, checkpoint=checkpoint, device=device, detector_weights=detector_weights))

    def close(self) -> None:
        """Release the worker threads (running jobs finish); a later request starts new ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def _workers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrent, thread_name_prefix="ftcn-predict")
            return self._executor

    # ------------------------------------------------------------ state

    def health(self) -> dict[str, Any]:
        with self._lock:
            admitted, running = self._admitted, self._running
        return {
            "healthy": True,
            **self.info,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "jobs": {
                "running": running,
                "waiting": admitted - running,
                "max_concurrent": self.max_concurrent,
                "queue_limit": self.queue_limit,
                "completed": self.completed,
                "failed": self.failed,
            },
        }

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self.max_concurrent + self.queue_limit:
                raise Refusal(429, "queue_full", "too many predictions in progress; retry later")
            self._admitted += 1

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    # ------------------------------------------------------------ requests

    def check_token(self, request: web.Request) -> None:
        if self.token is None:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
            raise Refusal(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")

    def parse_request(self, payload: Any) -> dict[str, Any]:
        """Validate the JSON body; unknown keys are ignored (client compatibility)."""
        if not isinstance(payload, dict):
            raise Refusal(400, "invalid_request", "the request body must be a JSON object")
        file_path = payload.get("file_path")
        if not isinstance(file_path, str) or not file_path.strip():
            raise Refusal(400, "invalid_request", "'file_path' must be a non-empty string")
        if len(file_path) > MAX_FILE_PATH_CHARS:
            raise Refusal(400, "invalid_request", f"'file_path' is longer than {MAX_FILE_PATH_CHARS} characters")
        max_frames = payload.get("max_frames")
        if max_frames is not None:
            if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
                raise Refusal(400, "invalid_request", "'max_frames' must be a positive integer")
        if self.max_frames_limit is not None:
            max_frames = min(max_frames or self.max_frames_limit, self.max_frames_limit)
        batch_size = payload.get("batch_size")
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
                raise Refusal(400, "invalid_request", f"'batch_size' must be an integer in 1..{MAX_BATCH_SIZE}")
        return {"file_path": file_path.strip(), "max_frames": max_frames, "batch_size": batch_size}

    async def predict(self, payload: Any) -> dict[str, Any]:
        """Run one /predict request end to end; raises Refusal for every client-side problem."""
        req = self.parse_request(payload)
        start_time, t0 = _utc_now(), time.monotonic()
        file_path = req["file_path"]
        url = is_url(file_path)
        local = None if url else confine_local_path(file_path, self.policy)
        self._admit()
        job_dir: Path | None = None
        handed_off = False
        try:
            source: dict[str, Any] = {"type": "local"}
            if url:
                if self.policy.download_dir is not None:
                    self.policy.download_dir.mkdir(parents=True, exist_ok=True)
                job_dir = Path(tempfile.mkdtemp(prefix="ftcn-predict-", dir=self.policy.download_dir))
                fetched = await download(file_path, job_dir, self.policy)
                video = fetched.path
                source = {"type": "url", "bytes": fetched.size, "redirects": fetched.redirects}
            else:
                assert local is not None
                video = local
            loop = asyncio.get_running_loop()
            job = functools.partial(self._run_job, video, req, job_dir)
            future = loop.run_in_executor(self._workers(), job)
            future.add_done_callback(lambda _f: self._release())
            handed_off = True
            # The job owns the download from here: a dropped client must not delete it mid-analysis.
            report, max_frames = await asyncio.shield(future)
        finally:
            if not handed_off:
                self._release()
                if job_dir is not None:
                    shutil.rmtree(job_dir, ignore_errors=True)
        return self._response(report, req, max_frames, source, start_time, t0)

    def _run_job(
        self, video: Path, req: dict[str, Any], job_dir: Path | None
    ) -> tuple[dict[str, Any], int | None]:
        """Worker thread: duration check, then the one analysis code path; always cleans up."""
        with self._lock:
            self._running += 1
        ok = False
        try:
            max_frames = self._duration_guard(video, req["max_frames"])
            try:
                report = self.analyzer.analyze(
                    video,
                    out_dir=None,
                    max_frames=max_frames,
                    batch_size=req["batch_size"],
                    progress=False,
                    write_video=False,
                    write_plot=False,
                )
            except InputError as exc:
                raise Refusal(422, "unusable_video", str(exc).replace(str(video), "file")) from None
            ok = True
            return report, max_frames
        finally:
            with self._lock:
                self._running -= 1
                if ok:
                    self.completed += 1
                else:
                    self.failed += 1
            if job_dir is not None:
                shutil.rmtree(job_dir, ignore_errors=True)

    def _duration_guard(self, video: Path, max_frames: int | None) -> int | None:
        """Refuse non-videos and over-long videos before any model time is spent.

        A container that states no duration (e.g. browser-recorded WebM) is analysed
        only up to `max_duration_s` worth of frames.
        """
        from ftcn.video import probe_video

        try:
            info = probe_video(video)
        except InputError as exc:
            raise Refusal(422, "not_a_video", str(exc).replace(str(video), "file")) from None
        if self.max_duration_s is None:
            return max_frames
        if info.duration is not None:
            if info.duration > self.max_duration_s:
                raise Refusal(
                    422,
                    "video_too_long",
                    f"video is {info.duration:.1f} s long, the limit is {self.max_duration_s:g} s",
                )
            return max_frames
        cap = max(1, int(self.max_duration_s * (info.fps or 30.0)))
        return cap if max_frames is None else min(max_frames, cap)

    def _response(
        self,
        report: dict[str, Any],
        req: dict[str, Any],
        max_frames: int | None,
        source: dict[str, Any],
        start_time: str,
        t0: float,
    ) -> dict[str, Any]:
        fps = report.get("fps")
        model = report.get("model") or {}
        return {
            "df_probability": report.get("df_probability"),
            "prediction": report.get("prediction"),
            "threshold": report.get("threshold"),
            "model": {"id": model.get("id"), "sha256": model.get("sha256"), "version": __version__},
            "start_time": start_time,
            "end_time": _utc_now(),
            "elapsed_s": round(time.monotonic() - t0, 3),
            "num_frames": report.get("num_frames"),
            "fps": fps,
            "stride": report.get("stride"),
            "max_frames": max_frames,
            "batch_size": (report.get("timings") or {}).get("batch_size", req["batch_size"]),
            "num_clips": report.get("num_clips"),
            "num_tracks": report.get("num_tracks"),
            "tracks": [_track_summary(t, fps) for t in report.get("tracks") or []],
            "warnings": report.get("warnings") or [],
            "timings": report.get("timings"),
            "source": source,
        }


# ---------------------------------------------------------------- HTTP layer

PREDICT_SERVICE = web.AppKey("ftcn_predict_service", PredictService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, error: str, reason: str) -> web.Response:
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ftcn-stream"'
    elif status == 429:
        headers["Retry-After"] = "5"
    return web.json_response({"error": error, "reason": reason}, status=status, headers=headers)


def _json_errors(handler: Handler) -> Handler:
    """Refusals -> 4xx JSON; anything else -> logged, 500 JSON with no internals."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refusal as exc:
            log.info("%s %s refused: %s (%s)", request.method, request.path, exc.error, exc.reason)
            return error_response(exc.status, exc.error, exc.reason)
        except InputError as exc:
            return error_response(422, "unusable_input", str(exc))
        except web.HTTPException:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, "internal_error", "the analysis failed on the server")

    return wrapped


async def read_json_body(request: web.Request, limit: int) -> Any:
    """The request body as JSON, refusing bodies over `limit` bytes without reading them whole."""
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, "body_too_large", f"request body is larger than {limit} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(8192):
        data += chunk
        if len(data) > limit:
            raise Refusal(413, "body_too_large", f"request body is larger than {limit} bytes")
    try:
        return json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: hostile nesting depth
        raise Refusal(400, "invalid_json", "the request body is not valid JSON") from None


def _has_route(app: web.Application, method: str, path: str) -> bool:
    return any(
        r.method == method and r.resource is not None and r.resource.canonical == path for r in app.router.routes()
    )


def add_predict_routes(app: web.Application, service: PredictService, *, healthcheck: bool | None = None) -> None:
    """Mount POST /predict (and GET /healthcheck) on `app`: the live analyzer's or a standalone one.

    `healthcheck=None` adds /healthcheck only when `app` has none yet; a host app with its own
    can merge `service.health()` into its answer instead. `app[PREDICT_SERVICE]` is the service.
    """

    @_json_errors
    async def health(_request: web.Request) -> web.Response:
        return web.json_response(service.health())

    @_json_errors
    async def predict(request: web.Request) -> web.Response:
        if request.method != "POST":
            raise Refusal(405, "method_not_allowed", "use POST with a JSON body")
        service.check_token(request)
        payload = await read_json_body(request, service.max_request_bytes)
        return web.json_response(await service.predict(payload))

    async def _close(_app: web.Application) -> None:
        service.close()

    app[PREDICT_SERVICE] = service
    if healthcheck or (healthcheck is None and not _has_route(app, "GET", "/healthcheck")):
        app.router.add_get("/healthcheck", health)
    app.router.add_route("*", "/predict", predict)
    app.on_cleanup.append(_close)


@web.middleware
async def json_http_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 404/405/... answers as JSON, like every other error of this server."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)


def create_app(service: PredictService) -> web.Application:
    """A standalone application serving only /healthcheck and /predict (`ftcn-stream serve`)."""
    app = web.Application(client_max_size=service.max_request_bytes, middlewares=[json_http_errors])
    add_predict_routes(app, service)
    return app
