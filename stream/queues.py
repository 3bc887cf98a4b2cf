"""Bounded asyncio queues: drop-oldest for live sources (counted), back-pressure otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class StageQueue(asyncio.Queue, Generic[T]):
    """A bounded queue that either blocks the producer or drops its oldest item.

    `drop_oldest=True` keeps latency bounded for live inputs: a full queue evicts the
    oldest droppable item (see `droppable`) and counts it in `dropped`. With
    `drop_oldest=False` `put` waits (back-pressure), so file sources in fast mode
    never lose frames. `on_put` (if set) is called after every put, e.g. to wake a
    consumer that watches several queues.
    """

    def __init__(
        self,
        maxsize: int,
        name: str = "",
        drop_oldest: bool = False,
        droppable: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(maxsize=maxsize)
        self.name = name
        self.drop_oldest = drop_oldest
        self.droppable = droppable
        self.dropped = 0
        self.on_put: Callable[[], None] | None = None

    def _evict(self) -> Any:
        items = self._queue  # type: ignore[attr-defined]  # the deque behind asyncio.Queue
        for i, item in enumerate(items):
            if self.droppable is None or self.droppable(item):
                del items[i]
                self.task_done()
                self.dropped += 1
                return item
        return None

    def put_dropping(self, item: T) -> T | None:
        """Non-blocking put that evicts (and returns) the oldest droppable item when full."""
        evicted = self._evict() if self.full() else None
        if self.full():  # nothing droppable: grow past the bound rather than lose control items
            self._queue.append(item)  # type: ignore[attr-defined]
            self._unfinished_tasks += 1  # type: ignore[attr-defined]
            self._wakeup_next(self._getters)  # type: ignore[attr-defined]
        else:
            self.put_nowait(item)
        if self.on_put is not None:
            self.on_put()
        return evicted

    async def put(self, item: T) -> None:  # type: ignore[override]
        if self.drop_oldest:
            self.put_dropping(item)
            return
        await super().put(item)
        if self.on_put is not None:
            self.on_put()


async def get_batch(q: asyncio.Queue, max_batch: int, timeout_s: float) -> list[Any]:
    """Wait for one item, then take more until `max_batch` or `timeout_s` after the first."""
    items = [await q.get()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(items) < max_batch:
        if not q.empty():
            items.append(q.get_nowait())
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            items.append(await asyncio.wait_for(q.get(), remaining))
        except asyncio.TimeoutError:
            break
    return items
