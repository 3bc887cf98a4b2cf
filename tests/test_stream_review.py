"""Regression tests for live-pipeline bugs found in review: each test failed before its fix."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from stream.resample import FpsResampler


def test_resampler_recovers_when_pts_jumps_backwards() -> None:
    # A source whose clock restarts (camera reboot without a reconnect, HLS discontinuity, a
    # looping feed) used to keep no frame at all until the new PTS caught up with the old ones.
    r = FpsResampler(30)
    assert sum(r.keep(100 + i / 30) for i in range(30)) == 30
    assert sum(r.keep(i / 30) for i in range(60)) == 60


def test_reconnect_backoff_does_not_hold_default_executor_threads() -> None:
    # The backoff between reconnects used to sleep in the loop's default executor: a few
    # sources waiting to reconnect (a camera site losing its network) starved every other
    # user of it: asyncio.to_thread (WHIP frame conversion, MJPEG encoding) and DNS lookups.
    import asyncio
    import socket
    from concurrent.futures import ThreadPoolExecutor

    from stream.queues import StageQueue
    from stream.sources import ReconnectPolicy, RTSPSource

    with socket.socket() as s:  # a closed loopback port: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go() -> float:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        states: list[str] = []
        src = RTSPSource("cam", f"rtsp://127.0.0.1:{port}/x", open_timeout_s=1, read_timeout_s=1,
                         policy=ReconnectPolicy(initial_s=5.0, max_s=5.0, jitter=0.0),
                         on_status=lambda _sid, st: states.append(st.state))
        task = asyncio.create_task(src.run(StageQueue(4, drop_oldest=True)))
        while "reconnecting" not in states:
            await asyncio.sleep(0.02)
        t0 = loop.time()
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 3.0)
        waited = loop.time() - t0
        src.stop()
        await asyncio.wait_for(task, 3.0)
        return waited

    assert asyncio.run(go()) < 1.0


@pytest.fixture(scope="module")
def pipeline(retinaface_weights: Path, random_ckpt: Path) -> Any:
    """One real pipeline object (RetinaFace + random FTCN on CPU), started and stopped per test."""
    from ftcn.config import load_config
    from stream.pipeline import Pipeline

    cfg = load_config(overrides={"stream": {"device": "cpu", "stats_interval_s": 60, "stop_timeout_s": 5}})
    return Pipeline(cfg, checkpoint=random_ckpt, detector_weights=retinaface_weights, device="cpu")


def test_post_streams_rejects_non_string_and_dot_ids(pipeline: Any) -> None:
    # A non-string id used to add the stream and then answer 500 (int) or crash the handler
    # before adding (list, dict: unhashable); "." and ".." are valid by the character set but
    # unreachable as URL path segments (/streams/.., /ws/..), so such a stream could not be managed.
    from aiohttp.test_utils import TestClient, TestServer

    from stream.http import create_app

    async def go() -> tuple[list[int], list]:
        await pipeline.start()
        client = TestClient(TestServer(create_app(pipeline)))
        await client.start_server()
        try:
            codes = []
            for body in ({"id": 5, "url": "/nonexistent.mp4"}, {"id": ["a"], "url": "/nonexistent.mp4"},
                         {"id": {"a": 1}, "url": "/nonexistent.mp4"}, {"id": "..", "url": "/nonexistent.mp4"},
                         {"id": ".", "url": "/nonexistent.mp4"},
                         {"id": "ok", "url": "/nonexistent.mp4", "realtime": "no"}):
                r = await client.post("/streams", json=body)
                codes.append(r.status)
                assert r.content_type == "application/json"
            listed = (await (await client.get("/streams")).json())["streams"]
            return codes, listed
        finally:
            await client.close()
            await pipeline.stop()

    codes, listed = asyncio.run(go())
    assert codes == [400] * 6
    assert listed == []


def test_viewer_hub_forgets_old_tracks() -> None:
    # The viewer kept the rolling score and a 30-message history of every face track ever seen
    # on a stream: a camera watching a hallway for days grew without bound, and every new
    # websocket was first sent the whole history.
    from stream.events import Event
    from stream.viewer import FrameHub

    hub = FrameHub(history=30)
    for tid in range(5000):
        for _ in range(3):
            hub.on_event(Event("face_score", "cam", {"track": tid, "rolling_score": 0.1, "score": 0.1},
                               track_id=tid))
    v = hub.views["cam"]
    assert len(v.history) <= 64 and len(v.rolling) <= 64
    assert 4999 in v.history and 4999 in v.rolling  # the newest faces are kept
    assert len(hub.snapshot("cam")) <= 64 * 30 + 3


def test_a_failing_detector_batch_does_not_stop_the_pipeline(pipeline: Any, videos_dir: Path) -> None:
    # One exception in a stage (a detector forward failing once: CUDA OOM on a huge batch, a
    # driver hiccup) ended that stage's task: every stream stopped for good while /healthcheck
    # still said healthy. The batch is now dropped and logged; the stage keeps going.
    video = videos_dir / "real" / "liveportrait_real_d12_man_talking_512.mp4"
    real = pipeline.detector
    calls = {"n": 0}

    class FailsOnce:
        def detect(self, frames: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected detector failure")
            return real.detect(frames)

    async def go() -> int:
        pipeline.detector = FailsOnce()
        try:
            await pipeline.start()
            pipeline.add_stream("f", str(video), realtime=False, max_frames=12)
            await pipeline.wait_stream("f", timeout=30)
            return pipeline.track.processed("f")
        finally:
            await pipeline.stop()
            pipeline.detector = real

    processed = asyncio.run(go())
    assert calls["n"] >= 2 and 0 < processed < 12


def test_removed_stream_leaves_no_per_stream_state(pipeline: Any, videos_dir: Path) -> None:
    # Removing a stream left its queue in the muxer (scanned on every batch forever), its
    # Prometheus latency series, its done-event and tracking counters; and remove_stream
    # returned before the stream's end had gone through the stages, so its tracker state (crop
    # rings) could outlive it and a stream re-added under the same id inherited it.
    from prometheus_client import generate_latest

    video = videos_dir / "real" / "liveportrait_real_d12_man_talking_512.mp4"

    async def go() -> dict[str, Any]:
        await pipeline.start()
        try:
            pipeline.add_stream("a", str(video), realtime=False, max_frames=32)
            await pipeline.wait_stream("a", timeout=60)
            had_series = 'stream="a"' in generate_latest(pipeline.metrics.registry).decode()
            pipeline.add_stream("b", str(video), realtime=True)
            while pipeline.track.processed("b") < 3:
                await asyncio.sleep(0.05)
            await pipeline.remove_stream("a")
            await pipeline.remove_stream("b")
            return {
                "had_series": had_series,
                "metrics": generate_latest(pipeline.metrics.registry).decode(),
                "mux": set(pipeline.muxer.inputs),
                "tracks": set(pipeline.track.streams),
                "done": set(pipeline._stream_done),
                "counters": set(pipeline.track._processed) | set(pipeline.track._live),
            }
        finally:
            await pipeline.stop()

    r = asyncio.run(go())
    assert r["had_series"]
    assert 'stream="a"' not in r["metrics"] and 'stream="b"' not in r["metrics"]
    assert r["mux"] == set() and r["tracks"] == set() and r["done"] == set() and r["counters"] == set()


def test_removal_without_waiting_keeps_the_id_until_the_end_has_drained(pipeline: Any, videos_dir: Path) -> None:
    # DELETE /streams and WHIP use remove_stream(wait=False): it must return once the source has
    # stopped (freeing waited for the stages to drain, several seconds on CPU, which timed out
    # HTTP clients), while the id stays reserved until the state is really freed.
    video = videos_dir / "real" / "liveportrait_real_d12_man_talking_512.mp4"

    async def go() -> dict[str, Any]:
        await pipeline.start()
        try:
            pipeline.add_stream("c", str(video), realtime=True)
            while pipeline.track.processed("c") < 3:
                await asyncio.sleep(0.05)
            assert await pipeline.remove_stream("c", wait=False)
            reserved = pipeline.id_taken("c") and "c" not in pipeline.streams
            try:
                pipeline.add_stream("c", str(video), realtime=True)
                readd_refused = False
            except KeyError:
                readd_refused = True
            second_remove = await pipeline.remove_stream("c", wait=False)
            await asyncio.wait_for(asyncio.gather(*list(pipeline._retiring.values())), 30)
            freed = not pipeline.id_taken("c") and "c" not in pipeline.track.streams
            return {"reserved": reserved, "refused": readd_refused, "second": second_remove, "freed": freed}
        finally:
            await pipeline.stop()

    r = asyncio.run(go())
    assert r == {"reserved": True, "refused": True, "second": False, "freed": True}
