"""The preprocessed-clip format shared by `preprocess`, `train` and `evaluate`.

    OUT/
      index.csv        one row per clip (the manifest `train`/`evaluate` read)
      videos.jsonl     one JSON line per finished video (status ok | no_face | error): resume log
      summary.json     counts of the last run, videos without a usable face
      real/<video_id>/c000.npz, c001.npz ...
      fake/<video_id>/...

`video_id` is the video's file stem plus the first 10 hex digits of its sha256, so two videos
with the same name never collide. Each clip file is `numpy.savez_compressed` with
`frames` uint8 (32, 224, 224, 3) RGB (exactly what the classifier sees at inference),
`frame_indices` int32 (32,) (decode-order frame of each clip frame; repeats for mirror-padded short
tracks), `label` int8 (0 real, 1 fake), `track_id` int32, and `video` / `video_sha256` strings, so a
clip file alone says what it is and where it came from. One file per clip keeps random access
cheap: reading a clip decompresses only that clip.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ftcn.errors import InputError

INDEX = "index.csv"
VIDEOS_LOG = "videos.jsonl"
SUMMARY = "summary.json"
LABELS = {"real": 0, "fake": 1}
LABEL_NAMES = {v: k for k, v in LABELS.items()}
INDEX_FIELDS = ("file", "label", "label_name", "video", "video_id", "video_sha256", "track_id",
                "first_frame", "last_frame", "frame_indices")


@dataclass
class ClipRecord:
    """One row of index.csv: a clip file (relative to the data root) and its provenance."""

    file: str
    label: int
    video: str  # source video path relative to the preprocess input dir
    video_id: str
    video_sha256: str
    track_id: int
    frame_indices: list[int]

    @property
    def label_name(self) -> str:
        return LABEL_NAMES[self.label]

    def row(self) -> dict[str, Any]:
        return {
            "file": self.file, "label": self.label, "label_name": self.label_name, "video": self.video,
            "video_id": self.video_id, "video_sha256": self.video_sha256, "track_id": self.track_id,
            "first_frame": min(self.frame_indices), "last_frame": max(self.frame_indices),
            "frame_indices": " ".join(map(str, self.frame_indices)),
        }


def save_clip(path: Path, frames: np.ndarray, rec: ClipRecord) -> None:
    """Write one clip file atomically (temp name + rename), so a crash never leaves half a clip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(
                fh,
                frames=np.ascontiguousarray(frames, dtype=np.uint8),
                frame_indices=np.asarray(rec.frame_indices, dtype=np.int32),
                label=np.int8(rec.label),
                track_id=np.int32(rec.track_id),
                video=np.str_(rec.video),
                video_sha256=np.str_(rec.video_sha256),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_clip(path: Path) -> tuple[np.ndarray, int]:
    """(frames uint8 (32,224,224,3), label) of one clip file."""
    with np.load(path, allow_pickle=False) as z:
        return z["frames"], int(z["label"])


def write_index(root: Path, records: Iterable[ClipRecord]) -> Path:
    """Rewrite index.csv atomically."""
    p = root / INDEX
    fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".csv", dir=root)
    with os.fdopen(fd, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=INDEX_FIELDS)
        w.writeheader()
        for r in records:
            w.writerow(r.row())
    os.replace(tmp, p)
    return p


def read_index(root: str | os.PathLike[str]) -> list[ClipRecord]:
    """Clip records of a preprocessed directory (index.csv, else rebuilt from videos.jsonl)."""
    root = Path(root)
    p = root / INDEX
    if not p.is_file():
        if (root / VIDEOS_LOG).is_file():
            return [r for v in read_video_log(root).values() for r in clips_of(v)]
        raise InputError(f"{root} is not a preprocessed clip directory (no {INDEX}; run `ftcn-stream preprocess`)")
    out = []
    with p.open(newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(ClipRecord(
                file=row["file"], label=int(row["label"]), video=row["video"], video_id=row["video_id"],
                video_sha256=row["video_sha256"], track_id=int(row["track_id"]),
                frame_indices=[int(v) for v in row["frame_indices"].split()],
            ))
    return out


def clips_of(video_entry: dict[str, Any]) -> list[ClipRecord]:
    return [ClipRecord(**c) for c in video_entry.get("clips", [])]


def read_video_log(root: Path) -> dict[str, dict[str, Any]]:
    """Finished videos by relative path (the last entry wins; a torn last line is ignored)."""
    p = Path(root) / VIDEOS_LOG
    out: dict[str, dict[str, Any]] = {}
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[entry["video"]] = entry
    return out


def append_video_log(root: Path, entry: dict[str, Any]) -> None:
    """Append one line durably; a torn line left by a crash is first closed with a newline."""
    p = Path(root) / VIDEOS_LOG
    torn = False
    if p.is_file() and p.stat().st_size:
        with p.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
    with p.open("a", encoding="utf-8") as fh:
        if torn:
            fh.write("\n")
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
