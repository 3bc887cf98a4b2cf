"""Scoring preprocessed clips with a checkpoint: video-level AUC, accuracy, ROC, threshold calibration.

Video scores are the mean clip probability per video, the same rule as `df_probability` at
inference, and a video is called fake when its score is above the threshold (as in `analyze`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ftcn.errors import ConfigError
from ftcn.model import normalize_clips
from ftcn.training import metrics
from ftcn.training.dataset import ClipDataset


@dataclass
class ClipPredictions:
    video_index: list[int]
    labels: list[float]
    probs: list[float]
    losses: list[float]  # per-clip BCE on the logit

    def extend(self, other: ClipPredictions) -> None:
        for name in ("video_index", "labels", "probs", "losses"):
            getattr(self, name).extend(getattr(other, name))


@torch.no_grad()
def predict_clips(
    logit_model: nn.Module, loader: DataLoader, device: str, amp: bool = False, progress: bool = False
) -> ClipPredictions:
    """Run `logit_model` (returns pre-sigmoid logits (N,1)) over a loader of ClipDataset items."""
    out = ClipPredictions([], [], [], [])
    for clips, labels, vids in tqdm(loader, desc="eval", unit="batch", disable=not progress, leave=False):
        x = normalize_clips(clips.to(device, non_blocking=True))
        y = labels.to(device).float()
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp and device.startswith("cuda")):
            logits = logit_model(x)[:, 0]
        logits = logits.float()
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        out.video_index.extend(int(v) for v in vids)
        out.labels.extend(float(v) for v in y.cpu())
        out.probs.extend(float(v) for v in torch.sigmoid(logits).cpu())
        out.losses.extend(float(v) for v in loss.cpu())
    return out


def summarize(preds: ClipPredictions, dataset: ClipDataset, threshold: float) -> dict[str, Any]:
    """Clip loss/accuracy (at p > 0.5) and video-level AUC and accuracy (at `threshold`)."""
    ids, vlabels, vscores = metrics.video_scores(preds.video_index, preds.labels, preds.probs)
    n = len(preds.probs)
    return {
        "clips": n,
        "videos": len(ids),
        "loss": float(np.mean(preds.losses)) if n else None,
        "clip_acc": metrics.accuracy(preds.labels, preds.probs, 0.5),
        "auc": metrics.roc_auc(vlabels, vscores),
        "video_acc": metrics.accuracy(vlabels, vscores, threshold),
        "threshold": threshold,
        "video_scores": {dataset.video_ids[i]: float(s) for i, s in zip(ids, vscores)},
        "video_labels": {dataset.video_ids[i]: int(y) for i, y in zip(ids, vlabels)},
    }


class LogitModel(nn.Module):
    """FTCN whose forward returns the logit, so DDP hooks run on the training forward."""

    def __init__(self, ftcn: nn.Module) -> None:
        super().__init__()
        self.ftcn = ftcn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ftcn.forward_logit(x)


def calibrate(labels: np.ndarray, scores: np.ndarray, method: str = "youden", target_fpr: float | None = None
              ) -> float:
    """Operating threshold from video labels/scores: Youden's J, or the best TPR at FPR <= target."""
    if len(set(labels.tolist())) < 2:
        raise ConfigError("threshold calibration needs real and fake videos")
    if method == "fpr":
        if target_fpr is None:
            raise ConfigError("--target-fpr is required for FPR calibration")
        return metrics.threshold_at_fpr(labels, scores, target_fpr)
    return metrics.youden_threshold(labels, scores)


def write_threshold(config_path: str | Path, model_id: str, threshold: float,
                    extra_model_keys: dict[str, Any] | None = None) -> Path:
    """Set model.thresholds[model_id] in a YAML config (created when missing), atomically.

    Only the parsed content is kept: comments in an existing file are lost.
    """
    p = Path(config_path)
    data: dict[str, Any] = {}
    if p.is_file():
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p} must hold a mapping at the top level")
    model = data.setdefault("model", {})
    if not isinstance(model, dict):
        raise ConfigError(f"{p}: `model` must be a mapping")
    model.update(extra_model_keys or {})
    thresholds = model.setdefault("thresholds", {}) or {}
    model["thresholds"] = thresholds
    thresholds[model_id] = float(threshold)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    os.replace(tmp, p)
    return p


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    p = Path(path)
    p.write_text(json.dumps(report, indent=2))
    return p


def evaluate_checkpoint(
    cfg: dict[str, Any],
    data: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    *,
    split_csv: str | Path | None = None,
    subset: str = "all",
    device: str = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    model_id: str | None = None,
    calibration: str = "youden",
    target_fpr: float | None = None,
    write_config: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score every clip of `data` (or one split of it), write evaluation.json, video_scores.csv and
    roc.png under `out`; with `write_config`, store the calibrated threshold in that YAML."""
    from ftcn.checkpoint import load_ftcn
    from ftcn.config import model_threshold
    from ftcn.training import layout, plots
    from ftcn.training.dataset import split_by_csv

    records = layout.read_index(data)
    if split_csv is not None and subset != "all":
        records = split_by_csv(records, split_csv)[subset]
    if not records:
        raise ConfigError(f"no clips to evaluate in {data} (subset {subset})")
    dataset = ClipDataset(data, records)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.startswith("cuda"))
    mid = model_id or str(cfg["model"]["id"])
    threshold = model_threshold(cfg, mid)
    model = load_ftcn(checkpoint, device)
    preds = predict_clips(LogitModel(model).eval(), loader, device, amp=False, progress=progress)
    report = summarize(preds, dataset, threshold)
    ids = list(report["video_scores"])
    labels = np.array([report["video_labels"][v] for v in ids], dtype=float)
    scores = np.array([report["video_scores"][v] for v in ids], dtype=float)
    roc = metrics.roc_curve(labels, scores)

    def point(t: float) -> tuple[float, float]:
        called = scores > t
        fake = labels > 0.5
        return (float(called[~fake].mean()) if (~fake).any() else 0.0,
                float(called[fake].mean()) if fake.any() else 0.0)

    operating = {f"configured {threshold:.4g}": point(threshold)}
    report.update(model_id=mid, checkpoint=str(checkpoint), data=str(data), subset=subset)
    if len(set(labels.tolist())) == 2:
        chosen = calibrate(labels, scores, calibration, target_fpr)
        fpr, tpr = point(chosen)
        report["calibration"] = {"method": calibration, "target_fpr": target_fpr, "threshold": chosen,
                                 "fpr": fpr, "tpr": tpr, "video_acc": metrics.accuracy(labels, scores, chosen)}
        operating[f"calibrated {chosen:.4g}"] = (fpr, tpr)
        if write_config is not None:
            write_threshold(write_config, mid, chosen)
            report["calibration"]["written_to"] = str(write_config)
    elif write_config is not None:
        raise ConfigError("cannot calibrate a threshold: the evaluated videos are all of one class")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report["outputs"] = {"report": str(out / "evaluation.json"), "roc": str(out / "roc.png"),
                         "video_scores": str(out / "video_scores.csv")}
    plots.plot_roc(roc, report["auc"], out / "roc.png", operating)
    with (out / "video_scores.csv").open("w") as fh:
        fh.write("video_id,label,score\n")
        for v, y, s in zip(ids, labels, scores):
            fh.write(f"{v},{int(y)},{s:.8g}\n")
    write_report(out / "evaluation.json", report)
    return report
