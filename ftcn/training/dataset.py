"""Preprocessed clips as a torch Dataset, and the train/validation split (by video, never by clip)."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import torch
from torch.utils.data import Dataset

from ftcn.errors import InputError
from ftcn.training import layout
from ftcn.training.layout import ClipRecord

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "eval": "test"}


class ClipDataset(Dataset):
    """Items: (uint8 clip (32,224,224,3) after `transform`, float label, index of the video).

    Normalisation happens on the training device (`ftcn.model.normalize_clips`) so that uint8, four
    times smaller than float, is what crosses process and PCIe boundaries.
    """

    def __init__(
        self,
        root: str | Path,
        records: Sequence[ClipRecord],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.root = Path(root)
        self.records = list(records)
        self.transform = transform
        self.video_ids = sorted({r.video_id for r in self.records})
        self._video_index = {v: i for i, v in enumerate(self.video_ids)}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        rec = self.records[i]
        frames, _ = layout.load_clip(self.root / rec.file)
        clip = torch.from_numpy(frames)
        if self.transform is not None:
            clip = self.transform(clip)
        return clip, torch.tensor(float(rec.label)), self._video_index[rec.video_id]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]


def _parse_label(value: str) -> int | None:
    v = value.strip().lower()
    if v in ("1", "fake", "true"):
        return 1
    if v in ("0", "real", "false"):
        return 0
    return None


def read_split_csv(path: str | Path) -> dict[str, tuple[int | None, str]]:
    """`filename,label,split` (the reference's format) -> {filename: (label, split)}.

    Splits are normalised (train | val | test; validation, valid, dev -> val; eval -> test).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"split CSV not found: {p}")
    out: dict[str, tuple[int | None, str]] = {}
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in reader.fieldnames or []}
        if "filename" not in fields or "split" not in fields:
            raise InputError(f"{p}: needs the columns filename,label,split (found {reader.fieldnames})")
        for n, row in enumerate(reader, start=2):
            split = SPLIT_ALIASES.get(row[fields["split"]].strip().lower())
            if split is None:
                raise InputError(f"{p}:{n}: unknown split {row[fields['split']]!r} (train, val or test)")
            label = _parse_label(row[fields["label"]]) if "label" in fields else None
            out[row[fields["filename"]].strip()] = (label, split)
    return out


def _keys(rec: ClipRecord) -> list[str]:
    """Names a split CSV may use for a video: relative path, file name, stem."""
    rel = PurePosixPath(rec.video)
    return [rec.video, rel.name, rel.stem, rec.video_id]


def split_by_csv(records: Sequence[ClipRecord], csv_path: str | Path) -> dict[str, list[ClipRecord]]:
    """Assign clips to splits by their source video's entry in the CSV.

    A video matches on its path relative to the preprocess input, its file name or its stem. Videos
    absent from the CSV are left out; a label that contradicts the folder label is an error.
    """
    table = read_split_csv(csv_path)
    out: dict[str, list[ClipRecord]] = {"train": [], "val": [], "test": []}
    conflicts: set[str] = set()
    for rec in records:
        hit = next((table[k] for k in _keys(rec) if k in table), None)
        if hit is None:
            continue
        label, split = hit
        if label is not None and label != rec.label:
            conflicts.add(rec.video)
            continue
        out[split].append(rec)
    if conflicts:
        shown = ", ".join(sorted(conflicts)[:5])
        raise InputError(f"{csv_path}: label disagrees with the real/fake folder for {len(conflicts)} videos: {shown}")
    return out


def stratified_split(
    records: Sequence[ClipRecord], val_fraction: float, seed: int
) -> dict[str, list[ClipRecord]]:
    """Random split of videos, per class, with a fixed seed; all clips of a video stay together.

    Each class with at least two videos gives at least one to validation (when val_fraction > 0).
    """
    videos: dict[int, list[str]] = {0: [], 1: []}
    for vid, label in sorted({(r.video_id, r.label) for r in records}):
        videos[label].append(vid)
    rng = random.Random(seed)
    val: set[str] = set()
    for label in (0, 1):
        vids = videos[label]
        rng.shuffle(vids)
        k = int(round(len(vids) * val_fraction))
        if val_fraction > 0 and len(vids) >= 2:
            k = min(max(k, 1), len(vids) - 1)
        val.update(vids[:k])
    return {
        "train": [r for r in records if r.video_id not in val],
        "val": [r for r in records if r.video_id in val],
        "test": [],
    }
