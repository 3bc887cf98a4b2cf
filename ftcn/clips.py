"""Which frames of a face track form the 32-frame clips the classifier sees.

Offline (`analyze`): a track of n >= 32 frames gives windows starting every
`stride` frames (stride 1 = every window, the paper protocol); one more window
is added at the end when the stride would leave the last frames uncovered.
Tracks shorter than 32 frames are padded by mirror-reflecting the frame order
at both ends, as the reference does, and then windowed the same way.

Live: `SlidingClipBuffer` keeps the last 32 items of a track and hands out a clip
every `stride` pushes once full.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


def _repeat_to(seq: list[int], length: int) -> list[int]:
    reps = length // max(len(seq), 1) + 1
    return seq * reps


def mirror_pad_indices(n: int, clip_size: int = 32) -> list[int]:
    """Index sequence of a track of `n` frames as the reference feeds it to windowing.

    n >= clip_size: 0..n-1 unchanged. Shorter: clip_size-1 mirrored indices are added
    on each side (e.g. ... 2, 1, 0, 1, 2 ... at the start), giving n + 2*(clip_size-1)
    entries. The reference's repetition count is too small for n < 9 and it fails
    there; here the pattern is repeated as often as needed.
    """
    if n <= 0:
        return []
    inner = list(range(n))
    if n >= clip_size:
        return inner
    pad = clip_size - 1
    middle_rev = inner[1:-1][::-1]
    post = _repeat_to(middle_rev + inner, pad)[:pad]
    pre = _repeat_to(inner + middle_rev, pad)[-pad:]
    return pre + inner + post


def clip_starts(n: int, stride: int, clip_size: int = 32) -> list[int]:
    """Window starts over a sequence of n entries (n >= clip_size), every `stride`,
    plus a final window ending at the last entry if the stride skipped it."""
    if stride < 1:
        raise ValueError("stride must be >= 1")
    if n < clip_size:
        return []
    starts = list(range(0, n - clip_size + 1, stride))
    if starts[-1] != n - clip_size:
        starts.append(n - clip_size)
    return starts


def track_clip_indices(n: int, stride: int, clip_size: int = 32) -> list[list[int]]:
    """Every clip of a track of n frames as lists of track-relative frame positions."""
    seq = mirror_pad_indices(n, clip_size)
    return [seq[s : s + clip_size] for s in clip_starts(len(seq), stride, clip_size)]


class SlidingClipBuffer(Generic[T]):
    """Fixed-capacity window over the newest items of one live track.

    The first clip is emitted at the `clip_size`-th push, then every `stride` pushes.
    Memory is bounded by `clip_size` items.
    """

    def __init__(self, clip_size: int = 32, stride: int = 8) -> None:
        if stride < 1:
            raise ValueError("stride must be >= 1")
        self.clip_size = clip_size
        self.stride = stride
        self._items: deque[T] = deque(maxlen=clip_size)
        self.pushed = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T) -> list[T] | None:
        self._items.append(item)
        self.pushed += 1
        if self.pushed >= self.clip_size and (self.pushed - self.clip_size) % self.stride == 0:
            return list(self._items)
        return None

    def items(self) -> list[T]:
        return list(self._items)
