"""`preprocess`: labelled videos -> aligned 32-frame face clips on disk (format: `ftcn.training.layout`).

Clips come from `ftcn.clip_extraction.ClipExtractor`, the same decode -> detect -> track -> crop ->
align path as `analyze` and `/predict`, so the network is fine-tuned on exactly the faces it will
see at inference. Only the choice of clips differs: a stride is derived from the frame count so that
each face track yields about `max_clips` windows, then `max_clips` of all windows are kept, evenly
spaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ftcn.checkpoint import file_sha256
from ftcn.clip_extraction import ClipExtractor
from ftcn.detector import FaceDetections
from ftcn.errors import FTCNError, InputError
from ftcn.training import layout
from ftcn.video import probe_video

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
                              ".ts", ".3gp"})


@dataclass
class LabelledVideo:
    path: Path
    rel: str  # path relative to the input root (the video's key in the manifest)
    label: int


def find_videos(root: str | Path) -> tuple[list[LabelledVideo], list[str]]:
    """Videos under `root` labelled by their nearest ancestor folder named `real` or `fake`.

    Covers `DIR/real` + `DIR/fake` as well as roots holding them deeper (`DIR/train/real`, ...).
    Returns (labelled videos sorted by path, relative paths of videos without a label folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"input directory not found: {root}")
    own = layout.LABELS.get(root.name.lower())  # `-d videos/fake` labels everything below it
    found: list[LabelledVideo] = []
    unlabelled: list[str] = []
    seen: set[str] = set()
    # os.walk with followlinks: real/ and fake/ are often symlinks to the dataset; `seen` breaks cycles.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix.lower() not in VIDEO_EXTENSIONS or not p.is_file():
                continue
            rel = p.relative_to(root)
            label = next((layout.LABELS[d.lower()] for d in reversed(rel.parts[:-1]) if d.lower() in layout.LABELS),
                         own)
            if label is None:
                unlabelled.append(rel.as_posix())
            else:
                found.append(LabelledVideo(p, rel.as_posix(), label))
    found.sort(key=lambda v: v.rel)
    return found, unlabelled


class MinFaceAreaFilter:
    """Wraps a detector and drops faces whose box is smaller than `min_area` pixels (w * h).

    This is how `--bbox_thres` acts: tiny faces give blurry, upscaled 224 crops that teach the model
    about resampling rather than forgery. Everything else is the wrapped detector's behaviour.
    """

    def __init__(self, detector: Any, min_area: float) -> None:
        self.detector = detector
        self.min_area = float(min_area)

    def detect(self, frames: Any) -> list[FaceDetections]:
        out = []
        for det in self.detector.detect(frames):
            if len(det) and self.min_area > 0:
                wh = det.boxes[:, 2:4] - det.boxes[:, 0:2]
                keep = wh[:, 0] * wh[:, 1] >= self.min_area
                det = FaceDetections(det.boxes[keep], det.scores[keep], det.landmarks[keep])
            out.append(det)
        return out


def clip_stride(num_frames: int | None, max_clips: int, clip_size: int = 32) -> int:
    """Window stride giving a track that spans `num_frames` frames about max_clips + 1 windows."""
    if not num_frames or num_frames <= clip_size:
        return clip_size
    return max(1, (num_frames - clip_size) // max(1, max_clips))


def select_evenly(items: list[Any], k: int) -> list[Any]:
    """k items spread evenly over the list (first and last included), in order."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[len(items) // 2]]
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


@dataclass
class _SpilledClip:
    """A candidate clip whose frames wait on disk until the selection."""

    track_id: int
    frame_indices: list[int]
    path: Path


@dataclass
class PreprocessSettings:
    max_clips: int = 8
    max_frames: int | None = 512
    face_thres: float = 0.5
    bbox_thres: float = 0.0
    min_track_frames: int = 16


@dataclass
class PreprocessSummary:
    videos: int = 0
    processed: int = 0
    skipped: int = 0
    ok: int = 0
    clips: int = 0
    no_face: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Preprocessor:
    """Turns labelled videos into clip files under `out`, resumably (see `layout`)."""

    def __init__(
        self,
        cfg: dict[str, Any],
        detector: Any,
        out: str | Path,
        settings: PreprocessSettings,
        align_backend: str = "cv2",
        device: str = "cpu",
    ) -> None:
        self.cfg = cfg
        self.detector = MinFaceAreaFilter(detector, settings.bbox_thres) if settings.bbox_thres > 0 else detector
        self.out = Path(out)
        self.settings = settings
        self.align_backend = align_backend
        self.device = device
        self.clip_size = int(cfg["model"]["clip_size"])

    def process_video(self, video: LabelledVideo) -> dict[str, Any]:
        """Extract, select and write the clips of one video; returns its videos.jsonl entry."""
        s = self.settings
        t0 = time.perf_counter()
        sha = file_sha256(video.path)
        video_id = f"{video.path.stem}_{sha[:10]}"
        vdir = self.out / layout.LABEL_NAMES[video.label] / video_id
        if vdir.exists():  # left over from an interrupted run
            shutil.rmtree(vdir)
        info = probe_video(video.path)
        n = info.num_frames if s.max_frames is None else min(s.max_frames, info.num_frames or s.max_frames)
        stride = clip_stride(n, s.max_clips, self.clip_size)
        extractor = ClipExtractor(self.detector, self.cfg, stride, self.align_backend, self.device)
        # Candidates are spilled to disk as they come (raw .npy, cheap to write) and only their
        # metadata stays in memory: a long video with many tracks would otherwise hold every aligned
        # clip (4.8 MB each) until the selection at the end.
        spill = self.out / ".candidates" / video_id
        shutil.rmtree(spill, ignore_errors=True)
        spill.mkdir(parents=True)
        try:
            by_track: dict[int, list[_SpilledClip]] = {}
            for i, clip in enumerate(extractor.run(str(video.path), max_frames=s.max_frames)):
                path = spill / f"{i:06d}.npy"
                np.save(path, clip.frames)
                by_track.setdefault(clip.track_id, []).append(_SpilledClip(clip.track_id, clip.frame_indices, path))
            long_enough = {t for t, summ in extractor.tracks.items() if summ.num_frames >= s.min_track_frames}
            candidates = [
                c for tid in sorted(by_track) if tid in long_enough
                for c in sorted(by_track[tid], key=lambda c: c.frame_indices[0])
            ]
            chosen = select_evenly(candidates, s.max_clips)
            clips = []
            for k, clip in enumerate(chosen):
                rec = layout.ClipRecord(
                    file=f"{layout.LABEL_NAMES[video.label]}/{video_id}/c{k:03d}.npz",
                    label=video.label, video=video.rel, video_id=video_id, video_sha256=sha,
                    track_id=int(clip.track_id), frame_indices=[int(i) for i in clip.frame_indices],
                )
                layout.save_clip(self.out / rec.file, np.load(clip.path), rec)
                clips.append(asdict(rec))
        finally:
            shutil.rmtree(spill, ignore_errors=True)
            with contextlib.suppress(OSError):
                spill.parent.rmdir()  # only when no other video's spill is there
        return {
            "video": video.rel,
            "label": video.label,
            "status": "ok" if clips else "no_face",
            "size": video.path.stat().st_size,
            "video_sha256": sha,
            "video_id": video_id,
            "frames_read": extractor.num_frames,
            "tracks": len(extractor.tracks),
            "stride": stride,
            "candidates": len(candidates),
            "clips": clips,
            "warnings": list(extractor.decode_errors),
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def run(self, videos: list[LabelledVideo], progress: bool = True) -> PreprocessSummary:
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        done = layout.read_video_log(self.out)
        prev_summary = self.out / layout.SUMMARY
        if done and prev_summary.is_file():
            before = json.loads(prev_summary.read_text()).get("settings")
            if before is not None and before != asdict(self.settings):
                log.warning("settings differ from the previous run (%s); videos already done keep their clips",
                            before)
        summary = PreprocessSummary(videos=len(videos))
        bar = tqdm(videos, unit="video", desc="preprocess", disable=not progress)
        for video in bar:
            prev = done.get(video.rel)
            if prev and prev["status"] in ("ok", "no_face") and prev.get("size") == video.path.stat().st_size:
                summary.skipped += 1
                entry = prev
            else:
                try:
                    entry = self.process_video(video)
                except (FTCNError, OSError, ValueError, RuntimeError) as exc:
                    log.debug("preprocess failed on %s", video.rel, exc_info=True)
                    entry = {"video": video.rel, "label": video.label, "status": "error", "error": str(exc),
                             "clips": []}
                layout.append_video_log(self.out, entry)
                done[video.rel] = entry
                summary.processed += 1
            if entry["status"] == "ok":
                summary.ok += 1
                summary.clips += len(entry["clips"])
            elif entry["status"] == "no_face":
                summary.no_face.append(video.rel)
            else:
                summary.errors[video.rel] = entry.get("error", "")
            bar.set_postfix(clips=summary.clips, no_face=len(summary.no_face), errors=len(summary.errors))
        bar.close()
        # The manifest covers every finished video in the log, also those of earlier runs.
        layout.write_index(self.out, [r for e in done.values() if e["status"] == "ok" for r in layout.clips_of(e)])
        summary.seconds = round(time.perf_counter() - t0, 3)
        (self.out / layout.SUMMARY).write_text(
            json.dumps({**asdict(summary), "settings": asdict(self.settings)}, indent=2)
        )
        return summary
