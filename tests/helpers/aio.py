"""An asyncio loop in a background thread, so a module-scoped app can serve several tests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiomqtt


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def stop_and_list_leftover_tasks(lt: LoopThread, *closers: Callable[[], Coroutine[Any, Any, Any]]) -> list[str]:
    """Await each closer in order on the loop thread; return the names of tasks still running after
    them (a clean shutdown leaves none)."""

    async def stop() -> list[str]:
        for close in closers:
            await close()
        me = asyncio.current_task()
        return [t.get_name() for t in asyncio.all_tasks() if t is not me and not t.done()]

    return lt.run(stop())


class Subscriber:
    """A real MQTT client that keeps (re)subscribing to `topic` and records (topic, payload, retain)."""

    def __init__(self, host: str, port: int, topic: str = "ftcn/#") -> None:
        self.host, self.port, self.topic = host, port, topic
        self.messages: list[tuple[str, Any, bool]] = []
        self.task: asyncio.Task | None = None
        self.connected = asyncio.Event()

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, timeout=3,
                                          protocol=aiomqtt.ProtocolVersion.V311) as c:
                    await c.subscribe(self.topic, qos=1)
                    self.connected.set()
                    async for m in c.messages:
                        try:
                            payload = json.loads(m.payload)
                        except ValueError:
                            payload = m.payload
                        self.messages.append((str(m.topic), payload, bool(m.retain)))
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.3)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def matching(self, pred: Callable[[str, Any], bool], since: int = 0) -> list[tuple[str, Any, bool]]:
        return [m for m in list(self.messages)[since:] if pred(m[0], m[1])]

    async def wait_for(self, pred: Callable[[str, Any], bool], timeout: float, what: str = "", since: int = 0) -> tuple:
        """First message (from index `since`) matching `pred`, waiting up to `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = self.matching(pred, since)
            if hits:
                return hits[0]
            await asyncio.sleep(0.1)
        seen = sorted({t for t, _, _ in self.messages})
        raise AssertionError(f"timed out waiting for {what}; topics seen: {seen}")
