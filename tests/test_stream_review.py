"""Regression tests for live-pipeline bugs found in review: each test failed before its fix."""

from __future__ import annotations

from stream.resample import FpsResampler


def test_resampler_recovers_when_pts_jumps_backwards() -> None:
    # A source whose clock restarts (camera reboot without a reconnect, HLS discontinuity, a
    # looping feed) used to keep no frame at all until the new PTS caught up with the old ones.
    r = FpsResampler(30)
    assert sum(r.keep(100 + i / 30) for i in range(30)) == 30
    assert sum(r.keep(i / 30) for i in range(60)) == 60
