"""The live pipeline: sources -> mux -> detect -> track/clip buffers -> align -> classify -> aggregate -> events.

Every arrow is a bounded queue (stream.queues.StageQueue). Heavy work (detector,
warp, classifier) runs in one worker thread per stage so the event loop stays
responsive and the stages overlap. Streams are added/removed at runtime.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ftcn.config import model_threshold, resolve_device
from stream.events import Event, EventBus, iso_now
from stream.frames import ClipJob, ClipScore, DetectedFrame, Frame, FrameFaces, TrackEnded
from stream.metrics import PipelineMetrics
from stream.queues import StageQueue
from stream.sources import Source, SourceStatus, make_source
from stream.stages.aggregate import Aggregator, AlertChange
from stream.stages.align import AlignStage
from stream.stages.classify import ClassifyStage, load_classifier
from stream.stages.detect import DetectStage
from stream.stages.mux import Muxer
from stream.stages.track import StreamEnd, TrackStage, end_marker, is_marker

log = logging.getLogger("stream.pipeline")

_VALID_ID = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_stream_id(stream_id: str) -> str:
    """Stream ids become MQTT topic levels: no '/', '+', '#', spaces."""
    if not isinstance(stream_id, str) or not stream_id or len(stream_id) > 64 or not set(stream_id) <= _VALID_ID:
        raise ValueError(f"invalid stream id {stream_id!r}: use 1-64 of [A-Za-z0-9._-]")
    if stream_id in (".", ".."):  # unreachable as a URL path segment (/streams/{id}, /ws/{id})
        raise ValueError(f"invalid stream id {stream_id!r}: '.' and '..' are not usable in URLs")
    return stream_id


@dataclass
class StreamHandle:
    stream_id: str
    source: Source
    queue: StageQueue[Frame]
    task: asyncio.Task | None = None
    status: SourceStatus | None = None
    started: float = field(default_factory=time.time)
    clips: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=200))
    last_in: int = 0
    last_processed: int = 0
    last_t: float = field(default_factory=time.monotonic)
    input_fps: float = 0.0
    processed_fps: float = 0.0
    stats_task: asyncio.Task | None = None


class Pipeline:
    """One process, one device: shared detector and classifier over all streams."""

    def __init__(
        self,
        cfg: dict[str, Any],
        *,
        checkpoint: Any = None,
        detector_weights: Any = None,
        device: str | None = None,
        bus: EventBus | None = None,
        detector: Any = None,
        classifier: Any = None,
    ) -> None:
        from ftcn.weights import resolve_checkpoint, resolve_detector_weights

        self.cfg = cfg
        self.scfg = cfg.get("stream", {})
        self.device = resolve_device(device or self.scfg.get("device", "auto"))
        self.bus = bus or EventBus()
        self.model_id = str(cfg["model"]["id"])
        self.threshold = model_threshold(cfg, self.model_id)
        if detector is None:
            from ftcn.detector import RetinaFaceDetector

            weights = resolve_detector_weights(cfg, detector_weights)
            detector = RetinaFaceDetector.from_config(cfg["detector"], weights, device=self.device)
        if classifier is None:
            classifier = load_classifier(cfg, resolve_checkpoint(cfg, checkpoint), self.device)
        self.detector = detector
        self.classifier = classifier
        self.engine = getattr(classifier, "name", type(classifier).__name__)
        self.aggregator = Aggregator.from_config(cfg.get("aggregate", {}), self.threshold)
        self.metrics = PipelineMetrics(self.snapshot)
        self.streams: dict[str, StreamHandle] = {}
        self.started = time.time()
        self._tasks: list[asyncio.Task] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._stream_done: dict[str, asyncio.Event] = {}
        # Removed streams whose end is still draining through the stages: their id stays taken.
        self._retiring: dict[str, asyncio.Task] = {}
        self.running = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.scfg
        mux_cfg, cls_cfg, q_cfg = s.get("mux", {}), s.get("classify", {}), s.get("queues", {})
        droppable = lambda item: isinstance(getattr(item, "job", item), ClipJob)  # noqa: E731
        self.q_detect: StageQueue = StageQueue(int(q_cfg.get("detect", 2)), "detect")
        self.q_track: StageQueue = StageQueue(int(q_cfg.get("track", 64)), "track")
        self.q_align: StageQueue = StageQueue(int(q_cfg.get("align", 16)), "align", droppable=droppable)
        self.q_classify: StageQueue = StageQueue(int(q_cfg.get("classify", 8)), "classify", droppable=droppable)
        self.q_aggregate: StageQueue = StageQueue(int(q_cfg.get("aggregate", 256)), "aggregate")
        ex = [ThreadPoolExecutor(1, thread_name_prefix=n) for n in ("detect", "align", "classify")]
        self._executors = ex
        self.muxer = Muxer(self.q_detect, int(mux_cfg.get("max_batch", 8)), float(mux_cfg.get("batch_timeout_ms", 10)))
        self.detect = DetectStage(self.detector, self.q_detect, self.q_track.put, ex[0], self.metrics,
                                  str(mux_cfg.get("mode", "letterbox")))
        self.track = TrackStage(self.cfg, self._put_clip_item, self.device, self._on_faces)
        self.align = AlignStage(self.q_align, self._put_classify_item, ex[1], int(self.cfg["model"]["imsize"]),
                                self.device, int(cls_cfg.get("max_batch", 4)), float(cls_cfg.get("align_timeout_ms", 5)),
                                self.metrics)
        self.classify = ClassifyStage(self.classifier, self.q_classify, self.q_aggregate.put, ex[2],
                                      int(cls_cfg.get("max_batch", 4)), float(cls_cfg.get("batch_timeout_ms", 20)),
                                      self.metrics)
        self._tasks = [
            asyncio.create_task(self.muxer.run(), name="mux"),
            asyncio.create_task(self.detect.run(), name="detect"),
            asyncio.create_task(self._track_loop(), name="track"),
            asyncio.create_task(self.align.run(), name="align"),
            asyncio.create_task(self.classify.run(), name="classify"),
            asyncio.create_task(self._aggregate_loop(), name="aggregate"),
        ]
        for t in self._tasks:
            t.add_done_callback(self._stage_died)
        self.running = True

    def _stage_died(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("pipeline stage %s failed: %r", task.get_name(), task.exception(), exc_info=task.exception())

    async def stop(self) -> None:
        """Stop every source (status `ended` is published), then the stages; no task is left running."""
        await asyncio.gather(*(self.remove_stream(sid, reason="shutdown") for sid in list(self.streams)))
        await asyncio.gather(*list(self._retiring.values()), return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for e in self._executors:
            e.shutdown(wait=True, cancel_futures=True)
        self.running = False

    # -- streams --------------------------------------------------------------------------

    def add_stream(self, stream_id: str, url: str, *, realtime: bool | None = None,
                   max_frames: int | None = None, source: Source | None = None) -> StreamHandle:
        """Start a stream (any URL kind, or a ready `source` such as a PushSource fed by WebRTC)."""
        check_stream_id(stream_id)
        if self.id_taken(stream_id):
            raise KeyError(f"stream {stream_id!r} already exists (or is still ending)")
        if source is None:
            source = make_source(stream_id, url, self.scfg, on_status=self._on_status,
                                 realtime=realtime, max_frames=max_frames)
        else:
            source.on_status = self._on_status
        qsize = int(self.scfg.get("queues", {}).get("source", 32))
        q: StageQueue[Frame] = StageQueue(qsize, f"source:{stream_id}", drop_oldest=source.live,
                                          droppable=lambda f: not is_marker(f))
        h = StreamHandle(stream_id, source, q)
        self.streams[stream_id] = h
        self._stream_done[stream_id] = asyncio.Event()  # fresh: set when this instance's end went through
        self.track.set_live(stream_id, source.live)
        self.muxer.add(stream_id, q)
        h.task = asyncio.create_task(self._run_source(h), name=f"source:{stream_id}")
        h.stats_task = asyncio.create_task(self._stats_loop(h), name=f"stats:{stream_id}")
        return h

    async def _run_source(self, h: StreamHandle) -> None:
        try:
            await h.source.run(h.queue)
        except asyncio.CancelledError:
            h.queue.put_dropping(end_marker(h.stream_id))  # the stages still free the stream's state
            raise
        except Exception as exc:  # noqa: BLE001 - a source failure is a status, not a crash
            log.exception("stream %s: source failed", h.stream_id)
            h.source.report("error", error=str(exc) or type(exc).__name__)
        # The end marker follows the last frame through mux/detect/track, in order.
        if h.source.live:
            h.queue.put_dropping(end_marker(h.stream_id))
        else:
            await h.queue.put(end_marker(h.stream_id))

    def id_taken(self, stream_id: str) -> bool:
        """True while a stream with this id runs or its end is still draining through the stages."""
        return stream_id in self.streams or stream_id in self._retiring

    async def remove_stream(self, stream_id: str, reason: str = "removed", *, wait: bool = True) -> bool:
        """Stop a stream's source (its `ended` status is published), then free its state.

        Freeing waits until the stream's end marker has passed every stage (a clip in flight may
        take seconds on CPU), so the tracker/aggregator state goes and a stream re-added under the
        same id cannot mix with this one's frames; until then the id stays taken (`id_taken`).
        `wait=False` returns once the source has stopped and lets that finish in the background
        (the HTTP API uses it, so DELETE answers at once).
        """
        h = self.streams.get(stream_id)
        if h is None:
            return False
        h.source.stop()
        if h.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(h.task), float(self.scfg.get("stop_timeout_s", 10)))
            except asyncio.TimeoutError:
                h.task.cancel()
                await asyncio.gather(h.task, return_exceptions=True)
        if h.stats_task is not None:
            h.stats_task.cancel()
            await asyncio.gather(h.stats_task, return_exceptions=True)
        if self.streams.get(stream_id) is not h:  # removed concurrently by another caller
            retiring = self._retiring.get(stream_id)
            if wait and retiring is not None:
                await asyncio.shield(retiring)
            return True
        self.streams.pop(stream_id, None)
        task = asyncio.create_task(self._retire(stream_id, reason), name=f"retire:{stream_id}")
        self._retiring[stream_id] = task
        if wait:
            await asyncio.shield(task)
        return True

    async def _retire(self, stream_id: str, reason: str) -> None:
        try:
            done = self._stream_done.get(stream_id)
            if done is not None:
                try:
                    await asyncio.wait_for(done.wait(), float(self.scfg.get("stop_timeout_s", 10)))
                except asyncio.TimeoutError:
                    log.warning("stream %s: end not confirmed by the stages in time", stream_id)
            self._stream_done.pop(stream_id, None)
            self.muxer.remove(stream_id)
            self.track.forget(stream_id)
            try:
                self.metrics.clip_latency.remove(stream_id)
            except KeyError:  # no clip was scored
                pass
            for change in self.aggregator.end_stream(stream_id, time.time(), reason):
                self._publish_alert(change)
        finally:
            self._retiring.pop(stream_id, None)

    async def wait_stream(self, stream_id: str, timeout: float | None = None) -> None:
        """Wait until a stream's source has finished and its last clip went through the pipeline."""
        h = self.streams.get(stream_id)
        if h is None or h.task is None:
            return
        await asyncio.wait_for(asyncio.shield(h.task), timeout)
        ev = self._stream_done.setdefault(stream_id, asyncio.Event())
        await asyncio.wait_for(ev.wait(), timeout)

    # -- stage glue ---------------------------------------------------------------------------

    async def _put_clip_item(self, item: Any) -> None:
        if isinstance(item, ClipJob) and item.live:
            self.q_align.put_dropping(item)
        else:
            await self.q_align.put(item)

    async def _put_classify_item(self, item: Any) -> None:
        job = getattr(item, "job", None)
        if job is not None and job.live:
            self.q_classify.put_dropping(item)
        else:
            await self.q_classify.put(item)

    async def _track_loop(self) -> None:
        while True:
            item: DetectedFrame = await self.q_track.get()
            try:
                await self.track.handle(item)
            except Exception:  # noqa: BLE001 - one bad frame must not stop tracking for every stream
                log.exception("stream %s: tracking failed on frame %d", item.frame.stream_id, item.frame.index)
            self.q_track.task_done()

    def _on_faces(self, ff: FrameFaces) -> None:
        self.bus.publish(Event("frame_faces", ff.stream_id, {"frame": ff.index, "pts": ff.pts, "faces": ff.faces},
                              attachment=ff.image))

    def _on_status(self, stream_id: str, status: SourceStatus) -> None:
        h = self.streams.get(stream_id)
        if h is not None:
            h.status = status
        payload = status.to_dict()
        payload["stream"] = stream_id
        payload["time"] = iso_now()
        self.bus.publish(Event("status", stream_id, payload))

    async def _aggregate_loop(self) -> None:
        while True:
            item = await self.q_aggregate.get()
            now = time.time()
            try:
                if isinstance(item, ClipScore):
                    self._on_score(item, now)
                elif isinstance(item, TrackEnded):
                    for change in self.aggregator.end_face(item.stream_id, item.track_id, now):
                        self._publish_alert(change)
                    self._publish_stream_score(item.stream_id, now)
                elif isinstance(item, StreamEnd):
                    for change in self.aggregator.end_stream(item.stream_id, now, "stream ended"):
                        self._publish_alert(change)
            except Exception:  # noqa: BLE001 - one bad item must not stop scoring for every stream
                log.exception("aggregation failed on %s", type(item).__name__)
            if isinstance(item, StreamEnd):
                self._stream_done.setdefault(item.stream_id, asyncio.Event()).set()
            self.q_aggregate.task_done()

    def _on_score(self, cs: ClipScore, now: float) -> None:
        job = cs.job
        sid = job.stream_id
        rolling, changes = self.aggregator.add_clip(sid, job.track_id, cs.score, now)
        latency = now - job.arrivals[-1]
        h = self.streams.get(sid)
        if h is not None:
            h.clips += 1
            h.latencies.append(latency)
        self.metrics.clip_latency.labels(sid).observe(latency)
        payload = {
            "stream": sid,
            "track": job.track_id,
            "score": round(cs.score, 8),
            "rolling_score": round(rolling, 8),
            "threshold": self.threshold,
            "fake": rolling >= self.threshold,
            "box": [round(float(v), 1) for v in job.boxes[-1]],
            "first_frame": job.frame_indices[0],
            "last_frame": job.frame_indices[-1],
            "first_pts": round(job.pts[0], 4),
            "last_pts": round(job.pts[-1], 4),
            "time": iso_now(now),
            "model": self.model_id,
            "latency_ms": round(latency * 1000.0, 1),
        }
        self.bus.publish(Event("face_score", sid, payload, track_id=job.track_id))
        for change in changes:
            self._publish_alert(change)
        self._publish_stream_score(sid, now)

    def _publish_stream_score(self, sid: str, now: float) -> None:
        score, n = self.aggregator.stream_score(sid)
        self.bus.publish(Event("stream_score", sid, {
            "stream": sid, "score": None if score is None else round(score, 8), "faces": n,
            "alerts_open": self.aggregator.open_alerts(sid), "time": iso_now(now),
        }))

    def _publish_alert(self, c: AlertChange) -> None:
        open_now = self.aggregator.open_alerts(c.stream_id)
        self.bus.publish(Event("alert", c.stream_id, {
            "stream": c.stream_id,
            "event": c.event,
            "track": c.track_id,
            "score": round(c.score, 8),
            "on": self.aggregator.on,
            "off": self.aggregator.off,
            "reason": c.reason,
            "opened_at": None if c.opened_at is None else iso_now(c.opened_at),
            "closed_at": iso_now(c.time) if c.event == "close" else None,
            "active": bool(open_now),
            "open_tracks": open_now,
            "model": self.model_id,
            "time": iso_now(c.time),
        }))
        log.info("stream %s: alert %s on face %d (score %.4g)", c.stream_id, c.event, c.track_id, c.score)

    # -- stats ------------------------------------------------------------------------------

    async def _stats_loop(self, h: StreamHandle) -> None:
        interval = float(self.scfg.get("stats_interval_s", 5.0))
        while True:
            await asyncio.sleep(interval)
            self._update_rates(h)
            self.bus.publish(Event("stats", h.stream_id, self.stream_stats(h)))

    def _update_rates(self, h: StreamHandle) -> None:
        t = time.monotonic()
        dt = max(1e-6, t - h.last_t)
        n_in, n_proc = h.source.frames_out, self.track.processed(h.stream_id)
        h.input_fps = max(0, n_in - h.last_in) / dt
        h.processed_fps = max(0, n_proc - h.last_processed) / dt if n_proc >= h.last_processed else 0.0
        h.last_in, h.last_processed, h.last_t = n_in, n_proc, t

    def queue_depths(self) -> dict[str, int]:
        qs = [self.q_detect, self.q_track, self.q_align, self.q_classify, self.q_aggregate] if self.running else []
        return {q.name: q.qsize() for q in qs}

    def stream_stats(self, h: StreamHandle) -> dict[str, Any]:
        lat = np.array(h.latencies) * 1000.0 if h.latencies else None
        return {
            "stream": h.stream_id,
            "input_fps": round(h.input_fps, 2),
            "processed_fps": round(h.processed_fps, 2),
            "frames_in": h.source.frames_out,
            "frames_processed": self.track.processed(h.stream_id),
            "dropped_frames": h.queue.dropped,
            "clips": h.clips,
            "queue_depths": {"source": h.queue.qsize(), **self.queue_depths()},
            "latency_ms": {
                "p50": None if lat is None else round(float(np.percentile(lat, 50)), 1),
                "p95": None if lat is None else round(float(np.percentile(lat, 95)), 1),
            },
            "time": iso_now(),
        }

    def snapshot(self) -> dict[str, Any]:
        """Values for /metrics and /streams, read at request time."""
        streams = {}
        for sid, h in self.streams.items():
            score, faces = self.aggregator.stream_score(sid)
            streams[sid] = {
                "frames_in": h.source.frames_out,
                "frames_processed": self.track.processed(sid) if self.running else 0,
                "frames_dropped": h.queue.dropped,
                "clips": h.clips,
                "input_fps": h.input_fps,
                "processed_fps": h.processed_fps,
                "queue_depth": h.queue.qsize(),
                "score": score,
                "faces": faces,
                "alerts_open": len(self.aggregator.open_alerts(sid)),
                "up": 1 if h.status is not None and h.status.state == "live" else 0,
            }
        qs = [self.q_detect, self.q_track, self.q_align, self.q_classify, self.q_aggregate] if self.running else []
        return {
            "streams": streams,
            "queues": {q.name: q.qsize() for q in qs},
            "queue_dropped": {q.name: q.dropped for q in qs},
        }

    def describe(self, sid: str) -> dict[str, Any]:
        h = self.streams[sid]
        st = h.status.to_dict() if h.status else {"state": "starting"}
        score, faces = self.aggregator.stream_score(sid)
        return {"id": sid, "url": h.source.status.source, "live": h.source.live, **st,
                "score": score, "faces": faces, "clips": h.clips, "dropped_frames": h.queue.dropped}
