"""Frame-rate resampling to the model's temporal rate.

FTCN was trained on ~25-30 fps clips: 32 frames must span about a second. A 60 fps
camera therefore keeps every other frame; slower sources keep every frame (never
duplicated: a duplicated frame looks like a frozen face to a temporal model).
"""

from __future__ import annotations


class FpsResampler:
    """Decide per PTS whether a frame is kept so the output rate is at most `target_fps`."""

    def __init__(self, target_fps: float | None) -> None:
        self.period = 1.0 / float(target_fps) if target_fps else 0.0
        self._next: float | None = None

    def reset(self) -> None:
        self._next = None

    def keep(self, pts: float) -> bool:
        if self.period <= 0:
            return True
        if self._next is not None and pts < self._next - 2.0 * self.period:
            self._next = None  # PTS went backwards (source clock reset, loop, discontinuity): re-anchor
        # A quarter period of tolerance absorbs PTS jitter (29.97 vs 30 fps keeps every frame).
        if self._next is None or pts >= self._next - 0.25 * self.period:
            if self._next is None or pts - self._next > self.period:
                self._next = pts  # a jump (seek, reconnect, stall): re-anchor
            self._next += self.period
            return True
        return False
