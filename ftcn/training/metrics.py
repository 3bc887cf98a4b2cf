"""Binary-classification metrics on video-level scores, in plain numpy (no scikit-learn).

AUC uses the Mann-Whitney rank statistic with average ranks for ties, so it equals the area
under the ROC curve with ties counted as half-correct, the usual definition.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numpy as np


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x`, tied values sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(labels: Iterable[float], scores: Iterable[float]) -> float | None:
    """Area under the ROC curve; None when only one class is present (AUC undefined)."""
    y = np.asarray(list(labels), dtype=np.float64)
    s = np.asarray(list(scores), dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError("labels and scores differ in length")
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class RocCurve:
    """ROC points for the rule "fake when score > threshold", thresholds descending."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(labels: Iterable[float], scores: Iterable[float]) -> RocCurve:
    """One point per distinct score plus the (0,0) start.

    Point i is the rule "fake when score >= thresholds[i]"; with the strict ">" used at inference
    the same point is reached by any threshold just below thresholds[i] (see `threshold_between`).
    """
    y = np.asarray(list(labels), dtype=np.float64) > 0.5
    s = np.asarray(list(scores), dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1] if len(s) else np.zeros(0, dtype=int)
    tp = np.cumsum(y)[last_of_run]
    fp = np.cumsum(~y)[last_of_run]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return RocCurve(
        fpr=np.r_[0.0, fp / n_neg],
        tpr=np.r_[0.0, tp / n_pos],
        thresholds=np.r_[np.inf, s[last_of_run]],
    )


def threshold_between(scores: np.ndarray, cut: float) -> float:
    """A threshold t for "fake when score > t" that classifies every score >= `cut` as fake and
    every score below it as real: the midpoint between `cut` and the next lower score."""
    lower = scores[scores < cut]
    if lower.size == 0:
        return float(np.nextafter(cut, -np.inf))
    return float((cut + lower.max()) / 2.0)


def youden_threshold(labels: Iterable[float], scores: Iterable[float]) -> float:
    """Threshold maximising TPR - FPR (Youden's J) for "fake when score > threshold"."""
    s = np.asarray(list(scores), dtype=np.float64)
    roc = roc_curve(labels, s)
    j = roc.tpr - roc.fpr
    i = int(np.argmax(j[1:])) + 1  # skip the (0,0) point at +inf
    return threshold_between(s, float(roc.thresholds[i]))


def threshold_at_fpr(labels: Iterable[float], scores: Iterable[float], target_fpr: float) -> float:
    """Lowest threshold (highest TPR) whose false-positive rate stays <= target_fpr."""
    s = np.asarray(list(scores), dtype=np.float64)
    roc = roc_curve(labels, s)
    ok = np.flatnonzero(roc.fpr <= target_fpr + 1e-12)
    i = int(ok.max())
    if i == 0:  # even the highest score alone exceeds the FPR budget: flag nothing
        return float(s.max()) if s.size else 0.5
    return threshold_between(s, float(roc.thresholds[i]))


def accuracy(labels: Iterable[float], scores: Iterable[float], threshold: float) -> float | None:
    """Share of items where (score > threshold) equals the label."""
    y = np.asarray(list(labels), dtype=np.float64) > 0.5
    s = np.asarray(list(scores), dtype=np.float64)
    if y.size == 0:
        return None
    return float(np.mean((s > threshold) == y))


def video_scores(
    video_ids: Iterable[Hashable], labels: Iterable[float], probs: Iterable[float]
) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """Average clip probabilities per video (as `df_probability` at inference).

    Returns (video ids in first-seen order, labels, mean probabilities).
    """
    acc: dict[Hashable, list[float]] = defaultdict(list)
    lab: dict[Hashable, float] = {}
    for vid, y, p in zip(video_ids, labels, probs):
        acc[vid].append(float(p))
        lab[vid] = float(y)
    ids = list(acc)
    return ids, np.array([lab[v] for v in ids]), np.array([np.mean(acc[v]) for v in ids])
