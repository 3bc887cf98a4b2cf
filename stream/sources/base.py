"""The one source interface, plus the PyAV decode loop shared by RTSP/HTTP/file/V4L2.

A source owns a blocking decoder running in a daemon thread and hands frames to
the event loop: live sources put with drop-oldest (latency stays bounded, drops
counted by the queue), offline sources block the decoder thread (back-pressure).
Every state change is reported through `on_status` as a `SourceStatus`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stream.frames import Frame
from stream.queues import StageQueue
from stream.resample import FpsResampler

log = logging.getLogger("stream.sources")

STATES = ("starting", "live", "reconnecting", "ended", "error")


@dataclass
class SourceStatus:
    """A stream's state as published on `{prefix}/{stream}/status`."""

    state: str
    source: str
    fps: float | None = None
    resolution: list[int] | None = None  # [width, height]
    error: str | None = None
    attempt: int = 0
    retry_in_s: float | None = None
    frames: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and status payloads."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class ReconnectPolicy:
    """Exponential backoff with full jitter; `max_attempts=None` retries forever."""

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> ReconnectPolicy:
        cfg = cfg or {}
        return cls(**{k: cfg[k] for k in ("initial_s", "max_s", "factor", "jitter", "max_attempts") if k in cfg})

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * random.random())


StatusCallback = Callable[[str, SourceStatus], None]


class Source(ABC):
    """One input stream. `run(out)` delivers `Frame`s into `out` until the stream ends or `stop()`."""

    live: bool = True

    def __init__(
        self,
        stream_id: str,
        url: str,
        *,
        target_fps: float | None = 30.0,
        on_status: StatusCallback | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.url = url
        self.resampler = FpsResampler(target_fps)
        self.on_status = on_status
        self.status = SourceStatus(state="starting", source=redact_url(url))
        self.frames_in = 0  # decoded frames (before resampling)
        self.frames_out = 0  # frames kept after resampling
        self.generation = 0
        self._stop = threading.Event()

    def report(self, state: str, **fields: Any) -> None:
        """Update and publish the status (one log line per state change)."""
        changed = state != self.status.state or fields.get("error") != self.status.error
        self.status.state = state
        for k, v in fields.items():
            setattr(self.status, k, v)
        if state != "reconnecting":
            self.status.retry_in_s = None
        self.status.frames = self.frames_out
        if changed:
            extra = f" ({self.status.error})" if self.status.error else ""
            log.info("stream %s: %s%s", self.stream_id, state, extra)
        if self.on_status is not None:
            self.on_status(self.stream_id, SourceStatus(**asdict(self.status)))

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @abstractmethod
    async def run(self, out: StageQueue[Frame]) -> None:
        """Deliver frames into `out`; returns when the stream has ended, failed or was stopped."""


class _EndOfStream(Exception):
    pass


class PyAVSource(Source):
    """Shared PyAV machinery: open (subclass hook), decode in a thread, resample, deliver, reconnect."""

    reconnect: bool = True
    realtime: bool = False
    max_frames: int | None = None  # stop (as ended) after this many kept frames

    def __init__(
        self,
        stream_id: str,
        url: str,
        *,
        target_fps: float | None = 30.0,
        on_status: StatusCallback | None = None,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        policy: ReconnectPolicy | None = None,
    ) -> None:
        super().__init__(stream_id, url, target_fps=target_fps, on_status=on_status)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.policy = policy or ReconnectPolicy()
        self._container: Any = None

    @abstractmethod
    def open_container(self) -> Any:
        """Open and return a PyAV input container (blocking; runs in the decoder thread)."""

    def ended_normally(self, container: Any) -> bool:
        """Whether EOF means the stream is over (files, VOD) rather than a dropped live feed."""
        return not self.reconnect

    async def run(self, out: StageQueue[Frame]) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        self.report("starting")
        while not self.stopped:
            done: asyncio.Future[str | None] = loop.create_future()
            thread = threading.Thread(
                target=self._thread_main, args=(loop, out, done), name=f"src-{self.stream_id}", daemon=True
            )
            thread.start()
            try:
                outcome = await asyncio.shield(done)
            except asyncio.CancelledError:
                self.stop()
                self._interrupt()
                raise
            # outcome: None = ended normally, "stopped", or an error text.
            if self.stopped or outcome == "stopped":
                break
            if outcome is None:
                self.report("ended", error=None)
                return
            if outcome.startswith("fatal:"):
                self.report("error", error=outcome[len("fatal:") :].strip())
                return
            if not self.reconnect:
                self.report("error", error=outcome)
                return
            if self.status.state == "live":
                attempt = 0  # it worked for a while: start the backoff again
            attempt += 1
            if self.policy.max_attempts is not None and attempt > self.policy.max_attempts:
                self.report("error", error=f"{outcome} (gave up after {attempt - 1} attempts)")
                return
            delay = self.policy.delay(attempt)
            self.report("reconnecting", error=outcome, attempt=attempt, retry_in_s=round(delay, 2))
            self.generation += 1
            self.resampler.reset()
            # Sleep on the loop, not in an executor thread: many sources backing off at once must
            # not starve the default executor (asyncio.to_thread users, DNS lookups).
            deadline = loop.time() + delay
            while not self.stopped and loop.time() < deadline:
                await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))
        self.report("ended", error=None)

    def _interrupt(self) -> None:
        c = self._container
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - best effort while stopping
                pass

    def _thread_main(self, loop: asyncio.AbstractEventLoop, out: StageQueue[Frame], done: asyncio.Future) -> None:
        outcome: str | None
        try:
            outcome = self._decode(loop, out)
        except _EndOfStream:
            outcome = None
        except Exception as exc:  # noqa: BLE001 - reported as a status, never a crash
            outcome = _describe(exc)
        if self.stopped:
            outcome = "stopped"
        loop.call_soon_threadsafe(_set_result, done, outcome)

    def _decode(self, loop: asyncio.AbstractEventLoop, out: StageQueue[Frame]) -> str | None:
        import av

        container = self.open_container()
        self._container = container
        try:
            if not container.streams.video:
                return "fatal: no video stream in the input"
            vstream = container.streams.video[0]
            vstream.thread_type = "AUTO"
            rate = vstream.average_rate or vstream.guessed_rate
            fps = float(rate) if rate else None
            tb = float(vstream.time_base) if vstream.time_base else None
            first_pts: float | None = None
            wall0 = time.monotonic()
            got_any = False
            n = 0
            try:
                for vf in container.decode(vstream):
                    if self.stopped:
                        return "stopped"
                    n += 1
                    self.frames_in += 1
                    if vf.pts is not None and tb is not None:
                        pts = vf.pts * tb
                    else:
                        pts = (n - 1) / (fps or 30.0)
                    if first_pts is None:
                        first_pts = pts
                    if not self.resampler.keep(pts):
                        continue
                    if self.realtime:
                        lag = (pts - first_pts) - (time.monotonic() - wall0)
                        if lag > 0 and self._stop.wait(lag):
                            return "stopped"
                    image = vf.to_ndarray(format="rgb24")
                    frame = Frame(
                        stream_id=self.stream_id,
                        index=self.frames_out,
                        pts=float(pts),
                        arrival=time.time(),
                        image=image,
                        generation=self.generation,
                    )
                    self.frames_out += 1
                    if not got_any:
                        got_any = True
                        w, h = vf.width, vf.height
                        loop.call_soon_threadsafe(
                            functools.partial(self.report, "live", fps=fps, resolution=[w, h], error=None, attempt=0)
                        )
                    if not self._deliver(loop, out, frame):
                        return "stopped"
                    if self.max_frames is not None and self.frames_out >= self.max_frames:
                        raise _EndOfStream
            except av.error.EOFError:
                pass
            if not got_any:
                return "fatal: the input has no decodable video frames" if not self.reconnect else "no frames received"
            if self.ended_normally(container):
                raise _EndOfStream
            return "stream ended (EOF)"
        finally:
            self._container = None
            try:
                container.close()
            except Exception:  # noqa: BLE001
                pass

    def _deliver(self, loop: asyncio.AbstractEventLoop, out: StageQueue[Frame], frame: Frame) -> bool:
        if self.live:
            loop.call_soon_threadsafe(out.put_dropping, frame)
            return True
        fut = asyncio.run_coroutine_threadsafe(out.put(frame), loop)
        while True:
            try:
                fut.result(timeout=0.25)
                return True
            except TimeoutError:
                if self.stopped or loop.is_closed():
                    fut.cancel()
                    return False


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _describe(exc: BaseException) -> str:
    """One line for a status payload: what failed, without a traceback."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
