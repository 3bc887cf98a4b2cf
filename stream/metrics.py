"""Prometheus metrics of one pipeline (own registry, so several pipelines can live in one process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _SnapshotCollector(Collector):
    """Per-stream values read from the pipeline at scrape time (no double bookkeeping)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot()
        streams = snap.get("streams", {})
        specs = [
            ("ftcn_stream_frames_in", "counter", "frames decoded and kept after fps resampling", "frames_in"),
            ("ftcn_stream_frames_processed", "counter", "frames through detection and tracking", "frames_processed"),
            ("ftcn_stream_frames_dropped", "counter", "frames dropped on full queues (live sources)", "frames_dropped"),
            ("ftcn_stream_clips", "counter", "clips classified", "clips"),
            ("ftcn_stream_input_fps", "gauge", "input frame rate after resampling", "input_fps"),
            ("ftcn_stream_processed_fps", "gauge", "processed frame rate", "processed_fps"),
            ("ftcn_stream_queue_depth", "gauge", "frames waiting in the stream's source queue", "queue_depth"),
            ("ftcn_stream_score", "gauge", "rolling stream score (max over live faces)", "score"),
            ("ftcn_stream_live_faces", "gauge", "faces with a rolling score", "faces"),
            ("ftcn_stream_alerts_open", "gauge", "faces with an open alert", "alerts_open"),
            ("ftcn_stream_up", "gauge", "1 when the stream state is live", "up"),
        ]
        for name, kind, doc, key in specs:
            fam = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, doc, labels=["stream"])
            for sid, st in streams.items():
                v = st.get(key)
                if v is not None:
                    fam.add_metric([sid], float(v))
            yield fam
        q = GaugeMetricFamily("ftcn_queue_depth", "items waiting per pipeline queue", labels=["queue"])
        for name, depth in snap.get("queues", {}).items():
            q.add_metric([name], float(depth))
        yield q
        d = CounterMetricFamily("ftcn_queue_dropped", "items dropped per pipeline queue", labels=["queue"])
        for name, n in snap.get("queue_dropped", {}).items():
            d.add_metric([name], float(n))
        yield d


class PipelineMetrics:
    """Histograms and counters that stages update directly."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_latency = Histogram(
            "ftcn_stage_seconds", "time spent in one stage call (one batch)", ["stage"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "ftcn_batch_size", "items per batch", ["stage"], buckets=BATCH_BUCKETS, registry=r
        )
        self.detect_batch_streams = Histogram(
            "ftcn_detect_batch_streams", "distinct streams in one detector batch",
            buckets=(1, 2, 3, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )
        self.multi_stream_batches = Counter(
            "ftcn_detect_multistream_batches", "detector batches holding frames of two or more streams", registry=r
        )
        self.clip_latency = Histogram(
            "ftcn_clip_latency_seconds", "last frame arrival of a clip to its score being published",
            ["stream"], buckets=LATENCY_BUCKETS, registry=r,
        )
        r.register(_SnapshotCollector(snapshot))
