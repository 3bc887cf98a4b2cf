"""Annotated output video: face boxes coloured by score with a label per face.

Written in a second decode pass over the input, so analysis never holds the whole
video in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ftcn.video import FrameReader, VideoWriter


def score_colour(score: float | None) -> tuple[int, int, int]:
    """RGB from green (0) through yellow to red (1); grey while no clip covers the face yet."""
    if score is None:
        return (160, 160, 160)
    s = float(np.clip(score, 0.0, 1.0))
    return (int(255 * min(1.0, 2 * s)), int(255 * min(1.0, 2 * (1 - s))), 0)


def draw_faces(rgb: np.ndarray, faces: list[dict[str, Any]], threshold: float) -> np.ndarray:
    out = rgb.copy()
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    font_scale = max(0.4, max(rgb.shape[:2]) / 1200)
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        score = face.get("score")
        colour = score_colour(score)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        if score is None:
            label = f"#{face['track_id']} ..."
        else:
            label = f"#{face['track_id']} {'FAKE' if score > threshold else 'REAL'} {score:.3f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        ty = max(th + base, y1 - 4)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 4, ty + 2), colour, -1)
        cv2.putText(out, label, (x1 + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thick)
    return out


def write_annotated_video(video_path: str, out_path: Path, report: dict[str, Any]) -> Path:
    frames = report["frames"]
    info = report["video_info"]
    threshold = float(report["threshold"])
    with VideoWriter(out_path, report["fps"], info["width"], info["height"]) as writer:
        for frame in FrameReader(video_path, max_frames=len(frames)):
            writer.write(draw_faces(frame.rgb, frames[frame.index]["faces"], threshold))
    return out_path
