"""MQTT sink against real brokers: embedded amqtt (in-process, v3.1.1 fallback) and mosquitto (v5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream.events import Event
from stream.sinks.broker import EmbeddedBroker
from stream.sinks.mqtt import MQTTSink
from tests.helpers.aio import Subscriber
from tests.helpers.services import Mosquitto


def test_embedded_broker_lwt_topics_and_v311_fallback() -> None:
    async def go() -> None:
        broker = EmbeddedBroker(port=0)
        await broker.start()
        sub = Subscriber("127.0.0.1", broker.port)
        sub.start()
        await asyncio.wait_for(sub.connected.wait(), 10)
        sink = MQTTSink(broker.url, prefix="ftcn")
        task = asyncio.create_task(sink.run())
        await sub.wait_for(lambda t, p: t == "ftcn/status" and p == {"state": "online"}, 10, "online status")
        assert sink.protocol is not None and sink.protocol.value == 4  # amqtt refuses v5: 3.1.1 used
        sink.on_event(Event("face_score", "cam1", {"score": 0.5}, track_id=3))
        sink.on_event(Event("alert", "cam1", {"event": "open"}))
        await sub.wait_for(lambda t, p: t == "ftcn/cam1/faces/3/score" and p["score"] == 0.5, 10, "score")
        _, _, retained = await sub.wait_for(lambda t, p: t == "ftcn/cam1/alert", 10, "alert")
        await sink.close()
        await asyncio.wait_for(task, 10)
        await sub.wait_for(lambda t, p: t == "ftcn/status" and p == {"state": "offline"}, 10, "offline status")
        await sub.stop()
        await broker.stop()

    asyncio.run(go())


def test_qos1_alerts_survive_a_mosquitto_restart_in_order(tmp_path: Path) -> None:
    mosq = Mosquitto(tmp_path)
    mosq.start()

    async def go() -> None:
        sink = MQTTSink(mosq.url, prefix="t", reconnect_max_s=0.5)
        task = asyncio.create_task(sink.run())
        for _ in range(100):
            if sink.connected:
                break
            await asyncio.sleep(0.1)
        assert sink.protocol is not None and sink.protocol.value == 5  # mosquitto speaks v5
        mosq.stop()
        for _ in range(100):
            if not sink.connected:
                break
            await asyncio.sleep(0.1)
        assert not sink.connected
        for i in range(5):
            sink.on_event(Event("alert", "cam", {"seq": i}))
        sink.on_event(Event("face_score", "cam", {"score": 1.0}, track_id=0))  # QoS 0: dropped while down
        assert sink.pending == 5 and sink.dropped == 1
        mosq.start()
        sub = Subscriber("127.0.0.1", mosq.port, "t/cam/alert")
        sub.start()
        # The sink reconnects and delivers; the subscriber sees at least the retained last one,
        # and every one it sees live comes in order.
        await sub.wait_for(lambda t, p: p.get("seq") == 4, 20, "last queued alert")
        seqs = [p["seq"] for _, p, _ in sub.messages]
        assert seqs == sorted(seqs)
        assert sink.pending == 0
        await sink.close()
        await asyncio.wait_for(task, 10)
        await sub.stop()

    try:
        asyncio.run(go())
    finally:
        mosq.stop()


@pytest.mark.parametrize("url", ["http://x", "mqtt://127.0.0.1:1"])
def test_sink_construction(url: str) -> None:
    if url.startswith("http"):
        with pytest.raises(ValueError):
            MQTTSink(url)
    else:
        assert MQTTSink(url).broker.port == 1
