"""MQTT sink (aiomqtt): the topics and payloads of DESIGN section 5 / docs/mqtt.md.

A broker outage never stops analysis: publishing runs in its own task from an
outbox. While disconnected, QoS-0 telemetry (scores, stats) is dropped (counted)
but QoS-1 messages (status, alerts) are kept and delivered in order after the
reconnect. MQTT v5 is tried first (message expiry on score topics); a broker that
refuses it gets v3.1.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from stream.events import TOPICS, Event, iso_now

log = logging.getLogger("stream.mqtt")


@dataclass
class BrokerURL:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """mqtt://user:pass@host:port or mqtts://... (default ports 1883 / 8883)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt:// or mqtts://)")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


@dataclass
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    expiry_s: int | None


class MQTTSink:
    """Publishes pipeline events. Use `on_event` as an EventBus subscriber, `run()` as a task."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "ftcn",
        ca_file: str | None = None,
        tls_insecure: bool = False,
        client_id: str | None = None,
        protocol: str = "auto",
        score_expiry_s: int | None = 30,
        max_pending_qos1: int = 10000,
        max_pending_qos0: int = 1000,
        keepalive: int = 10,
        reconnect_max_s: float = 5.0,
    ) -> None:
        self.broker = BrokerURL.parse(url)
        self.prefix = prefix.rstrip("/")
        self.ca_file = ca_file
        self.tls_insecure = tls_insecure
        self.client_id = client_id
        self.protocol_pref = str(protocol)
        self.protocol: aiomqtt.ProtocolVersion | None = None
        self.score_expiry_s = score_expiry_s
        self.max_pending_qos1 = max_pending_qos1
        self.max_pending_qos0 = max_pending_qos0
        self.keepalive = keepalive
        self.reconnect_max_s = reconnect_max_s
        self._outbox: deque[Outgoing] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self.connected = False
        self.connections = 0
        self.published = 0
        self.dropped = 0
        self.last_error: str | None = None

    @classmethod
    def from_config(cls, mqtt_cfg: dict[str, Any], url: str) -> MQTTSink:
        return cls(
            url,
            prefix=mqtt_cfg.get("prefix", "ftcn"),
            ca_file=mqtt_cfg.get("ca_file"),
            tls_insecure=bool(mqtt_cfg.get("tls_insecure", False)),
            client_id=mqtt_cfg.get("client_id"),
            protocol=str(mqtt_cfg.get("protocol", "auto")),
            score_expiry_s=mqtt_cfg.get("score_expiry_s", 30),
            keepalive=int(mqtt_cfg.get("keepalive", 10)),
            reconnect_max_s=float(mqtt_cfg.get("reconnect_max_s", 5.0)),
        )

    # -- producer side (event loop, never blocks) ---------------------------------

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    def on_event(self, event: Event) -> None:
        route = TOPICS.get(event.kind)
        if route is None:
            return
        template, retain, qos = route
        topic = self.topic(template.format(stream=event.stream_id, track=event.track_id))
        expiry = self.score_expiry_s if qos == 0 else None
        self.enqueue(Outgoing(topic, json.dumps(event.payload).encode(), qos, retain, expiry))

    def enqueue(self, msg: Outgoing) -> None:
        if msg.qos == 0:
            if not self.connected or self._count(0) >= self.max_pending_qos0:
                self.dropped += 1
                return
        elif self._count(1) >= self.max_pending_qos1:
            # Keep the newest state: evict the oldest QoS-1 message.
            for i, m in enumerate(self._outbox):
                if m.qos > 0:
                    del self._outbox[i]
                    self.dropped += 1
                    break
        self._outbox.append(msg)
        self._wake.set()

    def _count(self, qos: int) -> int:
        return sum(1 for m in self._outbox if (m.qos > 0) == (qos > 0))

    @property
    def pending(self) -> int:
        return len(self._outbox)

    # -- connection side ----------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.broker.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _client(self, protocol: aiomqtt.ProtocolVersion) -> aiomqtt.Client:
        will = aiomqtt.Will(self.topic("status"), json.dumps({"state": "offline"}), qos=1, retain=True)
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            protocol=protocol,
            will=will,
            keepalive=self.keepalive,
            timeout=5,
            tls_context=self._tls_context(),
        )

    def _protocols(self) -> list[aiomqtt.ProtocolVersion]:
        if self.protocol is not None:
            return [self.protocol]
        if self.protocol_pref in ("5", "v5", "5.0"):
            return [aiomqtt.ProtocolVersion.V5]
        if self.protocol_pref in ("3.1.1", "v311", "311", "4"):
            return [aiomqtt.ProtocolVersion.V311]
        return [aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311]

    async def run(self) -> None:
        """Connect, publish the outbox, reconnect with backoff; until `close()`."""
        attempt = 0
        while not self._closing:
            for proto in self._protocols():
                try:
                    async with self._client(proto) as client:
                        self.protocol = proto
                        self.connected = True
                        self.connections += 1
                        attempt = 0
                        log.info(
                            "MQTT connected to %s:%d (v%s)",
                            self.broker.host, self.broker.port, "5" if proto == aiomqtt.ProtocolVersion.V5 else "3.1.1",
                        )
                        await self._publish(client, Outgoing(self.topic("status"), b'{"state": "online"}', 1, True, None))
                        await self._drain(client)
                        if self._closing:
                            await self._publish(
                                client, Outgoing(self.topic("status"), b'{"state": "offline"}', 1, True, None)
                            )
                        return
                except aiomqtt.MqttCodeError as exc:
                    self.last_error = str(exc)
                    if exc.rc in (1, 132) and proto == aiomqtt.ProtocolVersion.V5 and self.protocol is None:
                        continue  # the broker does not speak v5: try 3.1.1 now
                except (aiomqtt.MqttError, OSError, asyncio.TimeoutError) as exc:
                    self.last_error = str(exc) or type(exc).__name__
                finally:
                    if self.connected:
                        log.warning("MQTT disconnected: %s", self.last_error)
                    self.connected = False
                break
            if self._closing:
                return
            attempt += 1
            delay = min(self.reconnect_max_s, 0.25 * 2 ** min(attempt, 8)) * (0.5 + 0.5 * random.random())
            log.debug("MQTT connect failed (%s); retry in %.1fs", self.last_error, delay)
            try:
                await asyncio.wait_for(self._closed_event().wait(), delay)
            except asyncio.TimeoutError:
                pass

    def _closed_event(self) -> asyncio.Event:
        if not hasattr(self, "_closed_ev"):
            self._closed_ev = asyncio.Event()
            if self._closing:
                self._closed_ev.set()
        return self._closed_ev

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            while self._outbox:
                msg = self._outbox[0]
                await self._publish(client, msg)
                if self._outbox and self._outbox[0] is msg:
                    self._outbox.popleft()
                self.published += 1
            if self._closing:
                return
            self._wake.clear()
            # Idle: wake on new messages, but notice a lost connection right away (aiomqtt
            # only reports it through this future), so reconnecting starts before the next publish.
            lost: asyncio.Future = client._disconnected  # noqa: SLF001
            waiter = asyncio.ensure_future(self._wake.wait())
            done, _ = await asyncio.wait({waiter, lost}, return_when=asyncio.FIRST_COMPLETED)
            if lost in done:
                waiter.cancel()
                exc = lost.exception()
                raise aiomqtt.MqttError(f"connection lost: {exc}" if exc else "connection lost")

    async def _publish(self, client: aiomqtt.Client, msg: Outgoing) -> None:
        props = None
        if msg.expiry_s and self.protocol == aiomqtt.ProtocolVersion.V5:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = int(msg.expiry_s)
        await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain, properties=props, timeout=10)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed within `timeout`, publish offline state, disconnect."""
        self._closing = True
        self._closed_event().set()
        self._wake.set()

    def status_payload(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "broker": f"{self.broker.host}:{self.broker.port}",
            "protocol": None if self.protocol is None else ("5" if self.protocol == aiomqtt.ProtocolVersion.V5 else "3.1.1"),
            "pending": self.pending,
            "published": self.published,
            "dropped": self.dropped,
            "time": iso_now(),
        }
