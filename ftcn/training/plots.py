"""Training curves and ROC plots as PNG (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ftcn.training.metrics import RocCurve  # noqa: E402


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Loss, accuracy and video-level AUC per epoch (train and validation where present)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_acc", "val_acc")), ("video AUC", ("val_auc",)))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            x, y = _series(history, key)
            if x:
                ax.plot(x, y, marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def plot_roc(roc: RocCurve, auc: float | None, path: str | Path, operating: dict[str, tuple[float, float]] | None = None
             ) -> Path:
    """ROC curve with the diagonal and named operating points {name: (fpr, tpr)}."""
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    label = "ROC" if auc is None else f"ROC (AUC {auc:.4f})"
    ax.plot(roc.fpr, roc.tpr, drawstyle="steps-post", label=label)
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=0.8)
    for name, (fpr, tpr) in (operating or {}).items():
        ax.plot([fpr], [tpr], "o", label=name)
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate (fake called fake)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
