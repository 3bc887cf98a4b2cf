"""Score timeline plot: one line per face track over time, with the operating threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def timeline_series(report: dict[str, Any]) -> dict[int, tuple[list[float], list[float]]]:
    """Per track: (time in seconds, face score) for every frame with a score."""
    fps = float(report.get("fps") or 25.0)
    per_track: dict[int, tuple[list[float], list[float]]] = {}
    for frame in report["frames"]:
        for face in frame["faces"]:
            if face["score"] is None:
                continue
            xs, ys = per_track.setdefault(face["track_id"], ([], []))
            # The frame's own timestamp keeps variable-frame-rate videos right; frame/fps otherwise.
            xs.append(frame["pts"] if frame.get("pts") is not None else frame["frame"] / fps)
            ys.append(face["score"])
    return per_track


def plot_timeline(report: dict[str, Any], out_path: Path) -> Path:
    threshold = float(report["threshold"])
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    per_track = timeline_series(report)
    for tid, (xs, ys) in sorted(per_track.items()):
        ax.plot(xs, ys, marker=".", markersize=2, linewidth=1.2, label=f"face #{tid}")
    ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {threshold:.4g}")
    # The official threshold (0.0026) is tiny: a log axis keeps it and the scores readable.
    if threshold < 0.05:
        ax.set_yscale("log")
        lowest = min([threshold / 3] + [min(ys) for _, ys in per_track.values()])
        ax.set_ylim(max(lowest * 0.8, 1e-6), 1.0)
    else:
        ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("fake probability")
    verdict = report["prediction"]
    df = report["df_probability"]
    title = f"{Path(report['video']).name}: {verdict}" + (f" (df_probability {df:.4f})" if df is not None else "")
    ax.set_title(title, fontsize=10)
    if not per_track:
        ax.text(0.5, 0.5, "no face found", transform=ax.transAxes, ha="center", va="center")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
