"""Bounded asyncio queues: drop-oldest for live sources (counted), back-pressure otherwise."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class StageQueue(asyncio.Queue, Generic[T]):
    """A bounded queue that either blocks the producer or drops its oldest item.

    `drop_oldest=True` keeps latency bounded for live inputs: a full queue evicts the
    oldest item and counts it in `dropped`. With `drop_oldest=False` `put` waits
    (back-pressure), so file sources in fast mode never lose frames.
    """

    def __init__(self, maxsize: int, name: str = "", drop_oldest: bool = False) -> None:
        super().__init__(maxsize=maxsize)
        self.name = name
        self.drop_oldest = drop_oldest
        self.dropped = 0

    def put_dropping(self, item: T) -> T | None:
        """Non-blocking put that evicts (and returns) the oldest item when full."""
        evicted = None
        if self.full():
            evicted = self.get_nowait()
            self.task_done()
            self.dropped += 1
        self.put_nowait(item)
        return evicted

    async def put(self, item: T) -> None:  # type: ignore[override]
        if self.drop_oldest:
            self.put_dropping(item)
        else:
            await super().put(item)
