"""Offline analysis of a whole video: the official demo (`test_on_raw_video.py`), done properly.

Scores follow the reference exactly: each clip's score is the network's
`final_output` (already a probability, no second sigmoid); a frame's score is the
mean over every clip occurrence that contains it (frames repeated inside a
mirror-padded clip count once per occurrence, as in the reference); the video's
`df_probability` is the mean of all clip scores. Unlike the reference, tracks may
start and end anywhere, several faces are followed, decoding is streamed, and
clips are classified in batches.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from engines.classifier import ClipClassifier, load_clip_classifier
from ftcn.checkpoint import file_sha256
from ftcn.clip_extraction import AlignedClip, ClipExtractor
from ftcn.config import model_threshold, resolve_device
from ftcn.detector import RetinaFaceDetector
from ftcn.errors import ConfigError, InputError
from ftcn.video import probe_video
from ftcn.weights import resolve_checkpoint, resolve_detector_weights

log = logging.getLogger(__name__)


def verdict(score: float | None, threshold: float) -> str:
    if score is None:
        return "NO_FACE"
    return "FAKE" if score > threshold else "REAL"


def _positive_int(value: Any, name: str) -> int:
    """A setting that must be an integer >= 1: a bad config value is a one-line ConfigError, not a
    traceback (stride 0 broke clip windowing) or a silently empty run (max_frames -1 read nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}") from None
    if number < 1 or number != float(value):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return number


class Analyzer:
    """Loads the classifier and the face detector once; analyses any number of videos."""

    def __init__(
        self,
        cfg: dict[str, Any],
        checkpoint: str | Path | None = None,
        device: str | None = None,
        detector_weights: str | Path | None = None,
        *,
        model: torch.nn.Module | None = None,
        detector: RetinaFaceDetector | None = None,
    ) -> None:
        """`model`/`detector`: already-loaded parts to share (the live server passes its own)."""
        self.cfg = cfg
        self.device = resolve_device(device or cfg["analyze"].get("device", "auto"))
        self.checkpoint = resolve_checkpoint(cfg, checkpoint)
        self.detector_weights = resolve_detector_weights(cfg, detector_weights)
        t0 = time.perf_counter()
        if model is not None:
            self.classifier = ClipClassifier(model, self.device, "torch", model=model)
        else:
            self.classifier = load_clip_classifier(cfg, self.checkpoint, self.device)
        self.model = self.classifier.model
        self.engine = self.classifier.name
        self.detector = detector or RetinaFaceDetector.from_config(
            cfg["detector"], self.detector_weights, device=self.device
        )
        self.load_s = time.perf_counter() - t0
        self.model_id = str(cfg["model"]["id"])
        self.model_sha256 = file_sha256(self.checkpoint)
        self.threshold = model_threshold(cfg, self.model_id)
        backend = cfg["align"].get("backend", "auto")
        if backend == "auto":
            backend = "torch" if self.device.startswith("cuda") else "cv2"
        self.align_backend = backend

    def score_clips(self, clips: list[AlignedClip]) -> list[float]:
        """Classify a batch of aligned clips; returns one probability per clip."""
        return self.classifier(torch.from_numpy(np.stack([c.frames for c in clips])))

    def analyze(
        self,
        video_path: str | Path,
        out_dir: str | Path | None = None,
        stride: int | None = None,
        max_frames: int | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        write_video: bool = True,
        write_plot: bool = True,
    ) -> dict[str, Any]:
        """Analyse one video and return the report (also written to `out_dir` when given)."""
        t_start = time.perf_counter()
        video_path = str(video_path)
        info = probe_video(video_path)
        stride = _positive_int(stride or self.cfg["analyze"]["stride"], "analyze.stride")
        max_frames = max_frames if max_frames is not None else self.cfg["analyze"].get("max_frames")
        if max_frames is not None:
            max_frames = _positive_int(max_frames, "analyze.max_frames")
        batch_size = max(1, int(batch_size or self.cfg["analyze"]["batch_size"]))
        extractor = ClipExtractor(self.detector, self.cfg, stride, self.align_backend, self.device)

        total = info.num_frames if max_frames is None else min(max_frames, info.num_frames or max_frames)
        bar = tqdm(total=total, unit="frame", desc="analyze", disable=not progress, leave=False)
        clip_records: list[dict[str, Any]] = []
        pending: list[AlignedClip] = []
        classify_s = 0.0

        def flush() -> None:
            nonlocal classify_s
            t0 = time.perf_counter()
            scores = self.score_clips(pending)
            classify_s += time.perf_counter() - t0
            for clip, score in zip(pending, scores):
                clip_records.append({"track_id": clip.track_id, "frames": clip.frame_indices, "score": score})
            bar.set_postfix(clips=len(clip_records))
            pending.clear()

        try:
            for clip in extractor.run(video_path, max_frames=max_frames, on_frame=lambda _i: bar.update(1)):
                pending.append(clip)
                if len(pending) >= batch_size:
                    flush()
            if pending:
                flush()
        finally:
            bar.close()

        if extractor.num_frames == 0:  # nothing analysed: not a NO_FACE verdict
            reason = "; ".join(extractor.decode_errors) or "no frame could be decoded"
            raise InputError(f"{video_path}: no frame could be decoded ({reason})")
        report = self._report(video_path, info, extractor, clip_records, stride)
        expected = info.num_frames if max_frames is None else min(max_frames, info.num_frames or max_frames)
        if expected and extractor.num_frames < expected - 1:
            report["warnings"].append(
                f"only {extractor.num_frames} of {expected} frames could be decoded (file truncated or corrupt?)"
            )
        report["timings"] = {
            **{k: round(v, 4) for k, v in extractor.timings.items()},
            "classify_s": round(classify_s, 4),
            "classify_s_per_clip": round(classify_s / len(clip_records), 4) if clip_records else None,
            "batch_size": batch_size,
            "model_load_s": round(self.load_s, 4),
        }
        if out_dir is not None:
            report["outputs"] = self._write_outputs(Path(out_dir), video_path, report, write_video, write_plot)
        report["timings"]["total_s"] = round(time.perf_counter() - t_start, 4)
        if out_dir is not None:
            Path(report["outputs"]["report"]).write_text(json.dumps(report, indent=2))
        return report

    def _report(
        self,
        video_path: str,
        info: Any,
        ex: ClipExtractor,
        clips: list[dict[str, Any]],
        stride: int,
    ) -> dict[str, Any]:
        frame_scores: dict[int, list[float]] = defaultdict(list)
        face_scores: dict[tuple[int, int], list[float]] = defaultdict(list)
        track_clips: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for c in clips:
            for f in c["frames"]:  # one entry per occurrence, as the reference
                frame_scores[f].append(c["score"])
                face_scores[(c["track_id"], f)].append(c["score"])
            track_clips[c["track_id"]].append(
                {"first_frame": min(c["frames"]), "last_frame": max(c["frames"]), "score": c["score"]}
            )
        df = float(np.mean([c["score"] for c in clips])) if clips else None

        tracks = []
        for tid in sorted(ex.tracks):
            t = ex.tracks[tid]
            tc = track_clips.get(tid, [])
            tscore = float(np.mean([c["score"] for c in tc])) if tc else None
            tracks.append(
                {
                    "track_id": tid,
                    "first_frame": t.first_frame,
                    "last_frame": t.last_frame,
                    "num_frames": t.num_frames,
                    "interpolated_frames": sorted(t.interpolated),
                    "mirror_padded": t.num_frames < ex.clip_size,
                    "score": tscore,
                    "prediction": verdict(tscore, self.threshold),
                    "clips": tc,
                }
            )

        frames = []
        for i in range(ex.num_frames):
            faces = []
            for t in ex.tracks.values():
                if i in t.boxes:
                    fs = face_scores.get((t.track_id, i))
                    faces.append(
                        {
                            "track_id": t.track_id,
                            "box": [round(v, 2) for v in t.boxes[i]],
                            "detector_score": round(t.det_scores[i], 4),
                            "score": float(np.mean(fs)) if fs else None,
                        }
                    )
            fs_all = frame_scores.get(i)
            pts = ex.frame_pts[i] if i < len(ex.frame_pts) else None
            frames.append(
                {"frame": i, "pts": pts, "score": float(np.mean(fs_all)) if fs_all else None, "faces": faces}
            )

        return {
            "video": video_path,
            "prediction": verdict(df, self.threshold),
            "df_probability": df,
            "threshold": self.threshold,
            "model": {
                "id": self.model_id,
                "checkpoint": str(self.checkpoint),
                "sha256": self.model_sha256,
                "detector": "retinaface_mobilenet0.25",
                "device": self.device,
                "engine": self.engine,
                "align_backend": self.align_backend,
            },
            "video_info": {
                "width": info.width,
                "height": info.height,
                "fps": info.fps,
                "codec": info.codec,
                "pix_fmt": info.pix_fmt,
                "container_frames": info.num_frames,
            },
            "num_frames": ex.num_frames,
            "fps": info.fps,
            "stride": stride,
            "clip_size": ex.clip_size,
            "num_clips": len(clips),
            "num_tracks": len(tracks),
            "warnings": list(ex.decode_errors),
            "tracks": tracks,
            "frames": frames,
        }

    def _write_outputs(
        self, out_dir: Path, video_path: str, report: dict[str, Any], write_video: bool, write_plot: bool
    ) -> dict[str, str | None]:
        from ftcn.annotate import write_annotated_video
        from ftcn.timeline import plot_timeline

        out_dir.mkdir(parents=True, exist_ok=True)
        outputs: dict[str, str | None] = {"report": str(out_dir / "report.json"), "video": None, "timeline": None}
        t0 = time.perf_counter()
        if write_video:
            outputs["video"] = str(write_annotated_video(video_path, out_dir / "annotated.mp4", report))
        if write_plot:
            outputs["timeline"] = str(plot_timeline(report, out_dir / "timeline.png"))
        report["timings"]["write_outputs_s"] = round(time.perf_counter() - t0, 4)
        return outputs
