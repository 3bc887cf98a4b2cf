"""Tracker and clip-sampling logic (pure, fast)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ftcn.clips import SlidingClipBuffer, clip_starts, mirror_pad_indices, track_clip_indices
from ftcn.tracker import IoUTracker, box_iou


@dataclass
class Dets:
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


def dets(*boxes: tuple[float, float, float, float], score: float = 0.99) -> Dets:
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    lm = np.repeat(b[:, None, :2], 5, axis=1) + 10.0
    return Dets(b, np.full(len(b), score), lm)


def test_box_iou_basic() -> None:
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])


def test_two_faces_keep_ids_when_order_swaps() -> None:
    tr = IoUTracker()
    s0 = tr.update(0, dets((0, 0, 50, 50), (100, 0, 150, 50)))
    ids0 = {tuple(f.box[:2]): f.track_id for f in s0.faces}
    s1 = tr.update(1, dets((102, 1, 152, 51), (2, 1, 52, 51)))  # detector order swapped
    for f in s1.faces:
        start = (0.0, 0.0) if f.box[0] < 50 else (100.0, 0.0)
        assert f.track_id == ids0[start]
    assert len(tr.live_tracks) == 2


def test_low_score_does_not_start_track_but_continues_one() -> None:
    tr = IoUTracker(min_start_score=0.8)
    assert tr.update(0, dets((0, 0, 50, 50), score=0.6)).faces == []
    assert len(tr.update(1, dets((0, 0, 50, 50), score=0.9)).faces) == 1
    assert len(tr.update(2, dets((1, 0, 51, 50), score=0.6)).faces) == 1


def test_short_gap_is_interpolated() -> None:
    tr = IoUTracker(max_gap=2)
    tr.update(0, dets((0, 0, 50, 50)))
    tr.update(1, dets())
    tr.update(2, dets())
    step = tr.update(3, dets((6, 0, 56, 50)))
    frames = [(f.frame_index, f.interpolated) for f in step.faces]
    assert frames == [(1, True), (2, True), (3, False)]
    np.testing.assert_allclose(step.faces[0].box, [2, 0, 52, 50])
    np.testing.assert_allclose(step.faces[1].box, [4, 0, 54, 50])
    assert len({f.track_id for f in step.faces}) == 1


def test_long_gap_ends_track() -> None:
    tr = IoUTracker(max_gap=2)
    tid = tr.update(0, dets((0, 0, 50, 50))).faces[0].track_id
    for i in (1, 2, 3):
        assert tr.update(i, dets()).ended == []  # a gap of 3 frames is only known at frame 4
    assert tr.update(4, dets()).ended == [tid]
    new = tr.update(5, dets((0, 0, 50, 50))).faces[0].track_id
    assert new != tid
    assert tr.finish() == [new]


def test_frames_must_increase() -> None:
    tr = IoUTracker()
    tr.update(3, dets())
    with pytest.raises(ValueError):
        tr.update(3, dets())


def test_mirror_pad_matches_reference_pattern() -> None:
    seq = mirror_pad_indices(24)
    assert len(seq) == 24 + 62
    assert seq[31:55] == list(range(24))
    # mirrored at both ends: ..., 2, 1, [0, 1, ..., 23], 22, 21, ...
    assert seq[28:31] == [3, 2, 1]
    assert seq[55:58] == [22, 21, 20]
    # reference: pre is the tail of (inner + reversed middle) repeated
    assert seq[:9] == list(range(15, 24))


@pytest.mark.parametrize("n", [1, 2, 3, 8, 31])
def test_mirror_pad_very_short_tracks(n: int) -> None:
    seq = mirror_pad_indices(n)
    assert len(seq) == n + 62
    assert set(seq) == set(range(n))
    assert seq[31 : 31 + n] == list(range(n))


def test_clip_starts_cover_every_frame() -> None:
    assert clip_starts(64, 16) == [0, 16, 32]
    assert clip_starts(70, 16) == [0, 16, 32, 38]
    assert clip_starts(40, 1) == list(range(9))
    assert clip_starts(31, 1) == []
    for n, s in [(33, 5), (100, 7), (64, 64)]:
        covered = set()
        for st in clip_starts(n, s):
            covered.update(range(st, st + 32))
        assert covered == set(range(n))


def test_track_clip_indices_short_and_long() -> None:
    assert len(track_clip_indices(64, 1)) == 33  # n - 31, as the reference
    short = track_clip_indices(24, 1)
    assert len(short) == 24 + 31 and all(len(c) == 32 for c in short)


def test_sliding_buffer_emits_every_stride() -> None:
    buf: SlidingClipBuffer[int] = SlidingClipBuffer(clip_size=32, stride=8)
    emitted = [(i, out) for i in range(60) if (out := buf.push(i)) is not None]
    assert [i for i, _ in emitted] == [31, 39, 47, 55]
    assert emitted[1][1] == list(range(8, 40))
    assert len(buf) == 32


def test_timeline_uses_frame_timestamps() -> None:
    """Variable frame rate: the plot's time axis is each frame's PTS, not frame / fps."""
    from ftcn.timeline import timeline_series

    face = {"track_id": 3, "score": 0.5}
    report = {"fps": 25.0, "frames": [
        {"frame": 0, "pts": 0.0, "faces": [face]},
        {"frame": 1, "pts": 0.1, "faces": [face]},  # a 10 fps stretch in a "25 fps" file
        {"frame": 2, "pts": None, "faces": [face]},
        {"frame": 3, "pts": 0.2, "faces": [{"track_id": 3, "score": None}]},
    ]}
    xs, ys = timeline_series(report)[3]
    assert xs == [0.0, 0.1, 2 / 25.0] and ys == [0.5, 0.5, 0.5]
