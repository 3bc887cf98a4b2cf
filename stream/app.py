"""One analyzer process: pipeline + MQTT sink (+ embedded broker) + HTTP server, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from stream.http import EXTRA_HEALTH, MQTT_SINK, create_app
from stream.pipeline import Pipeline
from stream.sinks.broker import EmbeddedBroker
from stream.sinks.mqtt import MQTTSink

log = logging.getLogger("stream.app")


def parse_hostport(text: str, default_port: int = 8000) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text or "127.0.0.1", default_port
    return host.strip("[]"), int(port)


def viewer_routes(cfg: dict[str, Any]) -> list[Callable[[web.Application], None]]:
    """The viewer (GET /viewer, /ws, /mjpeg) and WebRTC (WHIP ingest, WHEP) routes, unless disabled."""
    from stream import viewer, webrtc

    out: list[Callable[[web.Application], None]] = []
    if (cfg.get("viewer") or {}).get("enabled", True):
        out.append(viewer.register)
    if (cfg.get("webrtc") or {}).get("enabled", True) or out:  # WHEP/WHIP answer 404 themselves when disabled
        out.append(webrtc.register)
    return out


class StreamApp:
    """Starts broker (when no URL), MQTT sink, pipeline and HTTP server; `stop()` undoes it all."""

    def __init__(
        self,
        cfg: dict[str, Any],
        *,
        mqtt_url: str | None = None,
        http: str | None = None,
        pipeline: Pipeline | None = None,
        pipeline_kwargs: dict[str, Any] | None = None,
        extra_routes: Iterable[Callable[[web.Application], None]] = (),
    ) -> None:
        self.cfg = cfg
        mcfg = cfg.get("mqtt", {}) or {}
        self.mqtt_enabled = bool(mcfg.get("enabled", True))
        self.mqtt_url = mqtt_url or mcfg.get("url")
        hcfg = cfg.get("http", {}) or {}
        self.http_addr = http if http is not None else (None if not hcfg.get("enabled", True) else
                                                         f"{hcfg.get('host', '127.0.0.1')}:{hcfg.get('port', 8000)}")
        self._pipeline = pipeline
        self._pipeline_kwargs = pipeline_kwargs or {}
        self.extra_routes = list(extra_routes)
        self.broker: EmbeddedBroker | None = None
        self.sink: MQTTSink | None = None
        self._sink_task: asyncio.Task | None = None
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.http_port: int | None = None

    @property
    def pipeline(self) -> Pipeline:
        assert self._pipeline is not None
        return self._pipeline

    async def start(self) -> None:
        mcfg = self.cfg.get("mqtt", {}) or {}
        if self._pipeline is None:
            self._pipeline = await asyncio.to_thread(lambda: Pipeline(self.cfg, **self._pipeline_kwargs))
        if self.mqtt_enabled:
            url = self.mqtt_url
            if not url:
                emb = mcfg.get("embedded", {}) or {}
                self.broker = EmbeddedBroker(emb.get("host", "127.0.0.1"), int(emb.get("port", 1883)))
                await self.broker.start()
                url = self.broker.url
            self.sink = MQTTSink.from_config(mcfg, url)
            self.pipeline.bus.subscribe(self.sink.on_event)
            self._sink_task = asyncio.create_task(self.sink.run(), name="mqtt")
        await self.pipeline.start()
        if self.http_addr:
            host, port = parse_hostport(self.http_addr)
            routes = list(self.extra_routes)
            if (self.cfg.get("http") or {}).get("predict", True):
                routes.append(await asyncio.to_thread(self._predict_routes))
            routes += viewer_routes(self.cfg)
            self.app = create_app(self.pipeline, self.cfg, extra_routes=routes)
            if self.sink is not None:
                self.app[MQTT_SINK] = self.sink
            self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, host, port)
            await site.start()
            server = getattr(site, "_server", None)
            socks = getattr(server, "sockets", None) or []
            self.http_port = socks[0].getsockname()[1] if socks else port
            log.info("HTTP on http://%s:%d (GET /healthcheck, /streams, /metrics)", host, self.http_port)

    def _predict_routes(self) -> Callable[[web.Application], None]:
        """TrueMedia-compatible POST /predict on the same server, sharing the pipeline's detector
        (and its torch model when the classifier is the torch engine) instead of loading them twice."""
        from ftcn.analyze import Analyzer
        from ftcn.predict_service import PredictService, add_predict_routes

        kw = self._pipeline_kwargs
        analyzer = Analyzer(
            self.cfg, checkpoint=kw.get("checkpoint"), device=self.pipeline.device,
            detector_weights=kw.get("detector_weights"),
            model=getattr(self.pipeline.classifier, "model", None), detector=self.pipeline.detector,
        )
        service = PredictService(self.cfg, analyzer)

        def register(app: web.Application) -> None:
            add_predict_routes(app, service, healthcheck=False)
            app[EXTRA_HEALTH].update(
                {"model_sha256": service.info["model"]["sha256"], "face_detector": service.info["face_detector"]}
            )

        return register

    async def stop(self) -> None:
        """Sources end (status `ended` published), stages stop, MQTT flushes, broker and server close."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self._pipeline is not None and self._pipeline.running:
            await self._pipeline.stop()
        if self.sink is not None and self._sink_task is not None:
            await asyncio.sleep(0)
            await self.sink.close()
            try:
                await asyncio.wait_for(self._sink_task, float((self.cfg.get("mqtt") or {}).get("flush_timeout_s", 5)))
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._sink_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._sink_task
            self._sink_task = None
        if self.broker is not None:
            await self.broker.stop()
            self.broker = None
