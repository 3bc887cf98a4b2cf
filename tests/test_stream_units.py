"""Pure parts of the live pipeline: resampling, queues, aggregation, letterboxing, URL parsing."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stream.queues import StageQueue
from stream.resample import FpsResampler
from stream.sinks.mqtt import BrokerURL
from stream.sources import redact_url
from stream.stages.aggregate import Aggregator
from stream.stages.detect import letterbox


@pytest.mark.parametrize(("src_fps", "target", "expected"), [(60, 30, 30), (25, 30, 25), (29.97, 30, 30), (50, 30, 30)])
def test_resampler_rates(src_fps: float, target: float, expected: int) -> None:
    r = FpsResampler(target)
    kept = sum(r.keep(i / src_fps) for i in range(int(src_fps * 10)))
    assert abs(kept / 10 - expected) <= 1


def test_queue_drop_oldest_counts_and_keeps_newest() -> None:
    async def go() -> list[int]:
        q: StageQueue[int] = StageQueue(3, drop_oldest=True)
        for i in range(10):
            await q.put(i)
        assert q.dropped == 7
        return [q.get_nowait() for _ in range(q.qsize())]

    assert asyncio.run(go()) == [7, 8, 9]


def test_queue_never_drops_control_items() -> None:
    async def go() -> list[object]:
        q: StageQueue[object] = StageQueue(2, droppable=lambda x: isinstance(x, int))
        q.put_dropping("end")
        q.put_dropping(1)
        q.put_dropping(2)  # evicts 1, not "end"
        return [q.get_nowait() for _ in range(q.qsize())]

    assert asyncio.run(go()) == ["end", 2]


def test_aggregator_rolling_mean_hysteresis_and_stream_max() -> None:
    agg = Aggregator(window=2, on=0.6, off=0.4, n_on=2)
    r, ch = agg.add_clip("s", 1, 0.9, 0.0)
    assert r == pytest.approx(0.9) and ch == []  # one clip above is not enough (n_on=2)
    r, ch = agg.add_clip("s", 1, 0.7, 1.0)
    assert r == pytest.approx(0.8) and [c.event for c in ch] == ["open"]
    agg.add_clip("s", 2, 0.1, 1.0)
    assert agg.stream_score("s") == (pytest.approx(0.8), 2)
    r, ch = agg.add_clip("s", 1, 0.3, 2.0)  # mean(0.7, 0.3) = 0.5: between off and on, stays open
    assert ch == [] and agg.open_alerts("s") == [1]
    r, ch = agg.add_clip("s", 1, 0.2, 3.0)  # mean 0.25 < off
    assert [c.event for c in ch] == ["close"]
    for t in (4.0, 5.0, 5.5):  # rolling 0.55 (below on), then 0.9 twice: reopens
        agg.add_clip("s", 1, 0.9, t)
    assert agg.open_alerts("s") == [1]
    closes = agg.end_face("s", 1, 6.0)
    assert [c.event for c in closes] == ["close"] and agg.stream_score("s")[1] == 1


def test_letterbox_pads_bottom_right_only() -> None:
    a = np.full((4, 6, 3), 7, np.uint8)
    b = np.full((5, 3, 3), 9, np.uint8)
    out = letterbox([a, b])
    assert out.shape == (2, 5, 6, 3)
    assert (out[0, :4, :6] == 7).all() and (out[0, 4:] == 0).all()
    assert (out[1, :5, :3] == 9).all() and (out[1, :, 3:] == 0).all()


def test_broker_url_and_redaction() -> None:
    u = BrokerURL.parse("mqtts://us%40er:p%3Ass@broker.example:8884")
    assert (u.host, u.port, u.tls, u.username, u.password) == ("broker.example", 8884, True, "us@er", "p:ss")
    assert BrokerURL.parse("mqtt://h").port == 1883
    with pytest.raises(ValueError):
        BrokerURL.parse("http://h")
    assert redact_url("rtsp://admin:secret@cam/x") == "rtsp://admin:***@cam/x"
