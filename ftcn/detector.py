"""Batched RetinaFace (mobilenet0.25) face detection, faithful to the official FTCN detection path.

The reference (`test_tools/ct/detection` of FTCN) runs the network on full-resolution RGB frames minus the
BGR mean (104, 117, 123), decodes anchors with variances 0.1/0.2, keeps scores > 0.02, the best 5000, runs a
greedy NMS at IoU 0.4 with +1 pixel areas, keeps 750, and `get_valid_faces` keeps the first 10 faces and
drops scores below 0.5. This module does the same for a whole batch at once on the detector's device:
one forward pass, anchors cached per input size, decoding and NMS as tensor ops (no per-box Python loop).

The stages are public so another network runner (ONNX Runtime, TensorRT) can reuse them::

    x, scale = detector.preprocess(frames)          # (N,3,h,w) float32 on detector.device, (sx, sy)
    loc, conf, landms = runner(x)                    # same contract as detector.network
    faces = detector.postprocess(loc, conf, landms, x.shape[-2:], scale)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ftcn.errors import InputError, WeightsError
from ftcn.retinaface_net import MEAN_RGB_ORDER, MIN_SIZES, STEPS, VARIANCES, RetinaFaceNet

# Frames per forward are limited by pixels, not count, so 4K input does not exhaust memory.
_MAX_PIXELS_PER_FORWARD = 8 * 1920 * 1080
# Upper bound on elements of the temporary IoU blocks built during NMS.
_MAX_NMS_BLOCK_ELEMENTS = 1 << 22
# Frames whose NMS matrices are resolved together are limited so N*K*K stays below this.
_MAX_NMS_MATRIX_ELEMENTS = 1 << 25
# Fixed-point NMS steps before falling back to the exact row scan (real frames need well under 10).
_FIXED_POINT_STEPS = 32


@dataclass
class FaceDetections:
    """Faces of one frame, best score first, in the input frame's pixel coordinates."""

    boxes: np.ndarray  # (K, 4) float64 x1, y1, x2, y2
    scores: np.ndarray  # (K,) float64
    landmarks: np.ndarray  # (K, 5, 2) float64: left eye, right eye, nose, left mouth, right mouth

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> FaceDetections:
        return cls(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2)))

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> FaceDetections:
        """From rows [x1, y1, x2, y2, score, 10 landmark coordinates] (the detect_raw layout)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 15)
        return cls(rows[:, :4].copy(), rows[:, 4].copy(), rows[:, 5:].reshape(-1, 5, 2).copy())


def load_network(weights: str | Path, device: str | torch.device = "cpu") -> RetinaFaceNet:
    """Build the network and load `weights` strictly (every key and shape must match), in eval mode."""
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"RetinaFace weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise WeightsError(f"cannot read RetinaFace weights {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"RetinaFace weights {path} do not hold a state dict")
    # Same convention as the reference loader: a DataParallel `module.` prefix is stripped.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = RetinaFaceNet()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = sorted(
        k for k in set(expected) & set(state)
        if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {label} key(s): {shown}")
        raise WeightsError(f"{path} is not RetinaFace mobilenet0.25 weights: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)
    return net.eval().to(device)


def prior_boxes(height: int, width: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Anchors (P, 4) float32 as (cx, cy, w, h) relative to the input size; order level, row, col, size."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = -(-height // step), -(-width // step)
        cy = (torch.arange(fh, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(fw, dtype=torch.float64) + 0.5) * step / width
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        n_sizes = len(sizes)
        centres = torch.stack([gx, gy], dim=-1)[:, :, None, :].expand(fh, fw, n_sizes, 2)
        wh = torch.tensor([[s / width, s / height] for s in sizes], dtype=torch.float64)
        wh = wh[None, None].expand(fh, fw, n_sizes, 2)
        out.append(torch.cat([centres, wh], dim=-1).reshape(-1, 4))
    return torch.cat(out).to(dtype=torch.float32, device=device)


def frames_to_tensor(frames: Any, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB frames (numpy, torch, or a list of same-size frames) -> uint8 tensor on device."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise InputError("no frames given to the face detector")
        if isinstance(frames[0], torch.Tensor):
            frames = torch.stack(list(frames))
        else:
            shapes = {np.shape(f) for f in frames}
            if len(shapes) != 1:
                raise InputError(f"frames given to the face detector differ in size: {sorted(shapes)}")
            frames = np.stack(frames)
    t = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[-1] != 3:
        raise InputError(f"face detector expects (N, H, W, 3) RGB frames, got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise InputError(f"face detector expects uint8 frames, got {t.dtype}")
    return t.to(device, non_blocking=True)


def preprocess(
    frames: torch.Tensor, max_size: int | None = None
) -> tuple[torch.Tensor, tuple[float, float]]:
    """uint8 (N, H, W, 3) RGB frames -> network input (N, 3, h, w) float32 and the (sx, sy) that maps
    network-input pixels back to frame pixels.

    Like the reference, the RGB array gets the mean (104, 117, 123) subtracted in array order and no
    scaling. With `max_size`, frames whose longest side exceeds it are resized (bilinear, no antialias).
    The full-resolution result is a channels-last view (NHWC memory) exactly as the reference feeds it.
    """
    n, h, w, _ = frames.shape
    x = frames.float()
    mean = torch.tensor(MEAN_RGB_ORDER, dtype=torch.float32, device=x.device)
    if max_size is not None and max(h, w) > max_size:
        r = max_size / max(h, w)
        nh, nw = max(1, round(h * r)), max(1, round(w * r))
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(nh, nw), mode="bilinear", align_corners=False,
                          antialias=False)
        return x - mean.view(1, 3, 1, 1), (w / nw, h / nh)
    return (x - mean).permute(0, 3, 1, 2), (1.0, 1.0)


def _decode(loc: torch.Tensor, landms: torch.Tensor, priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor offsets -> boxes (x1, y1, x2, y2) and 5 landmarks, relative coordinates, reference op order."""
    c, wh = priors[..., :2], priors[..., 2:]
    centre = c + loc[..., :2] * VARIANCES[0] * wh
    size = wh * torch.exp(loc[..., 2:] * VARIANCES[1])
    x1y1 = centre - size / 2
    boxes = torch.cat([x1y1, size + x1y1], dim=-1)
    pts = landms.unflatten(-1, (5, 2))
    lms = c.unsqueeze(-2) + pts * VARIANCES[0] * wh.unsqueeze(-2)
    return boxes, lms.flatten(-2)


def _suppression_matrix(boxes: torch.Tensor, thresh: float) -> torch.Tensor:
    """(N, K, K) bool: entry [n, i, j] is True when i < j and IoU(i, j) > thresh.

    IoU follows the reference py_cpu_nms in float32: +1 pixel widths/heights and inter / (a_i + a_j - inter).
    Built in row blocks to bound the temporaries.
    """
    n, k, _ = boxes.shape
    x1, y1, x2, y2 = boxes.unbind(-1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    out = torch.zeros((n, k, k), dtype=torch.bool, device=boxes.device)
    cols = torch.arange(k, device=boxes.device)
    block = max(1, _MAX_NMS_BLOCK_ELEMENTS // max(1, n * k))
    for s in range(0, k, block):
        e = min(k, s + block)
        xx1 = torch.maximum(x1[:, s:e, None], x1[:, None, :])
        yy1 = torch.maximum(y1[:, s:e, None], y1[:, None, :])
        xx2 = torch.minimum(x2[:, s:e, None], x2[:, None, :])
        yy2 = torch.minimum(y2[:, s:e, None], y2[:, None, :])
        inter = (xx2 - xx1 + 1).clamp_(min=0.0) * (yy2 - yy1 + 1).clamp_(min=0.0)
        iou = inter / (areas[:, s:e, None] + areas[:, None, :] - inter)
        upper = cols[None, :] > torch.arange(s, e, device=boxes.device)[:, None]
        # `not <=` rather than `>`: like the reference, a NaN overlap (degenerate boxes) suppresses.
        out[:, s:e] = ~(iou <= thresh) & upper
    return out


def greedy_nms(boxes: torch.Tensor, valid: torch.Tensor, thresh: float) -> torch.Tensor:
    """Batched greedy NMS on score-sorted candidates; returns the (N, K) bool mask of kept boxes.

    boxes (N, K, 4) are sorted by descending score per frame, `valid` (N, K) marks real candidates
    (padding is never kept and never suppresses). Greedy NMS keeps box j iff no *kept* earlier box i
    overlaps it above `thresh`. That recurrence is first solved by fixed-point iteration on the whole
    matrix (the Cluster-NMS scheme): keep <- valid & not any_i(keep_i & S_ij). S is strictly upper
    triangular, so the fixed point is unique and equals the sequential greedy result; on real detections
    it converges in a few steps. Long suppression chains (rare, adversarial) fall back to an exact scan
    over rows, still batched over frames and without host syncs.
    """
    n, k = valid.shape
    if k == 0:
        return valid.clone()
    if n > 1 and n * k * k > _MAX_NMS_MATRIX_ELEMENTS:
        half = n // 2
        return torch.cat([greedy_nms(boxes[:half], valid[:half], thresh),
                          greedy_nms(boxes[half:], valid[half:], thresh)])
    sup = _suppression_matrix(boxes, thresh) & valid[:, :, None]
    sup_f = sup.to(torch.float32)
    keep = valid.clone()
    for _ in range(_FIXED_POINT_STEPS):
        hit = torch.bmm(keep.to(torch.float32).unsqueeze(1), sup_f).squeeze(1) > 0
        new_keep = valid & ~hit
        if torch.equal(new_keep, keep):
            return keep
        keep = new_keep
    keep = valid.clone()
    for i in range(k - 1):
        keep[:, i + 1 :] &= ~(sup[:, i, i + 1 :] & keep[:, i : i + 1])
    return keep


class RetinaFaceDetector:
    """RetinaFace mobilenet0.25 face detector for batches of same-size RGB frames.

    `network` is the raw torch module (see ftcn.retinaface_net for its input/output contract; `conf` is
    softmax probabilities). `preprocess` and `postprocess` let other runners reuse the exact pipeline.
    """

    def __init__(
        self,
        weights: str | Path,
        device: str | torch.device = "cpu",
        *,
        confidence_threshold: float = 0.02,
        top_k: int = 5000,
        nms_threshold: float = 0.4,
        keep_top_k: int = 750,
        max_faces: int = 10,
        face_threshold: float = 0.5,
        max_size: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.network: RetinaFaceNet = load_network(weights, self.device)
        self.confidence_threshold = float(confidence_threshold)
        self.top_k = int(top_k)
        self.nms_threshold = float(nms_threshold)
        self.keep_top_k = int(keep_top_k)
        self.max_faces = int(max_faces)
        self.face_threshold = float(face_threshold)
        self.max_size = None if max_size is None else int(max_size)
        self._priors: dict[tuple[int, int], torch.Tensor] = {}
        # What runs the network: the torch module, or an engine's `infer` (ONNX Runtime, TensorRT)
        # with the same input/output contract; decode and NMS stay here either way.
        self.runner: Any = self.network
        self.engine = "torch"

    def use_engine(self, engine: Any) -> None:
        """Run the network through `engine.infer` (an `engines.Engine` for network "retinaface")."""
        self.runner = engine.infer
        self.engine = f"{engine.backend}/{engine.precision}"

    @classmethod
    def from_config(cls, det_cfg: dict[str, Any], weights: str | Path, device: str | torch.device = "cpu"
                    ) -> RetinaFaceDetector:
        """Build from the `detector` section of the config (`weights` and `batch_size` are the caller's)."""
        keys = ("confidence_threshold", "top_k", "nms_threshold", "keep_top_k", "max_faces", "face_threshold",
                "max_size")
        det = cls(weights, device, **{k: det_cfg[k] for k in keys if k in det_cfg})
        backend = str(det_cfg.get("backend") or "torch")
        if backend != "torch":
            from engines.loader import load

            det.use_engine(load(weights, network="retinaface", backend=backend,
                                precision=str(det_cfg.get("precision") or "fp32"), device=device,
                                max_batch=int(det_cfg.get("batch_size", 8)), reference=det.network))
        return det

    # -- stages ---------------------------------------------------------------------------------------------

    def priors(self, input_hw: Sequence[int]) -> torch.Tensor:
        """Anchors for a network input size, cached (the size of a stream rarely changes)."""
        key = (int(input_hw[0]), int(input_hw[1]))
        p = self._priors.get(key)
        if p is None:
            p = self._priors[key] = prior_boxes(key[0], key[1], self.device)
        return p

    def preprocess(self, frames: Any) -> tuple[torch.Tensor, tuple[float, float]]:
        """Frames (see `detect`) -> (network input on self.device, (sx, sy) network->frame pixel scale)."""
        return preprocess(frames_to_tensor(frames, self.device), self.max_size)

    def postprocess_raw(
        self,
        loc: torch.Tensor,
        conf: torch.Tensor,
        landms: torch.Tensor,
        input_hw: Sequence[int],
        scale: float | Sequence[float] = 1.0,
        *,
        conf_is_logits: bool = False,
    ) -> list[torch.Tensor]:
        """Network outputs (N, P, 4/2/10) -> per frame (M, 15) float32 rows on the device after NMS.

        Rows are [x1, y1, x2, y2, score, l1x, l1y, ..., l5x, l5y], best first, score > confidence,
        at most keep_top_k, in frame pixels: decoded in network-input pixels (where NMS runs, as in the
        reference), then multiplied by `scale` (sx, sy) or a single factor.
        """
        h, w = int(input_hw[0]), int(input_hw[1])
        loc, conf, landms = (t.to(self.device, torch.float32) for t in (loc, conf, landms))
        if conf_is_logits:
            conf = torch.softmax(conf, dim=-1)
        n, p = conf.shape[:2]
        priors = self.priors((h, w))
        if priors.shape[0] != p:
            raise ValueError(f"network output has {p} anchors, input size {h}x{w} needs {priors.shape[0]}")
        scores = conf[..., 1]
        above = scores > self.confidence_threshold
        counts = above.sum(dim=1).clamp(max=self.top_k)
        k = int(counts.max()) if n else 0
        if k == 0:
            return [torch.zeros((0, 15), device=self.device) for _ in range(n)]
        order = torch.sort(scores.masked_fill(~above, -1.0), dim=1, descending=True, stable=True).indices[:, :k]
        valid = torch.arange(k, device=self.device)[None, :] < counts[:, None]
        cand_scores = scores.gather(1, order)
        boxes, lms = _decode(
            loc.gather(1, order[..., None].expand(n, k, 4)),
            landms.gather(1, order[..., None].expand(n, k, 10)),
            priors[order],
        )
        boxes = boxes * torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
        lms = lms * torch.tensor([w, h] * 5, dtype=torch.float32, device=self.device)
        keep = greedy_nms(boxes, valid, self.nms_threshold)
        sx, sy = (float(scale), float(scale)) if isinstance(scale, (int, float)) else map(float, scale)
        rows = torch.cat([boxes, cand_scores[..., None], lms], dim=-1)
        if (sx, sy) != (1.0, 1.0):
            factor = torch.tensor([sx, sy, sx, sy, 1.0] + [sx, sy] * 5, dtype=torch.float32, device=self.device)
            rows = rows * factor
        return [rows[i][keep[i]][: self.keep_top_k] for i in range(n)]

    def valid_faces(self, rows: torch.Tensor | np.ndarray) -> FaceDetections:
        """The reference's get_valid_faces: the first `max_faces` rows, minus those scoring < face_threshold."""
        r = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        r = r[: self.max_faces]
        r = r[r[:, 4] >= self.face_threshold]
        return FaceDetections.from_rows(r) if len(r) else FaceDetections.empty()

    def postprocess(
        self,
        loc: torch.Tensor,
        conf: torch.Tensor,
        landms: torch.Tensor,
        input_hw: Sequence[int],
        scale: float | Sequence[float] = 1.0,
        *,
        conf_is_logits: bool = False,
    ) -> list[FaceDetections]:
        """Network outputs -> one FaceDetections per frame (decode, NMS, validity filter)."""
        raw = self.postprocess_raw(loc, conf, landms, input_hw, scale, conf_is_logits=conf_is_logits)
        return [self.valid_faces(r) for r in raw]

    # -- whole pipeline -------------------------------------------------------------------------------------

    def _run(self, frames: Any) -> list[torch.Tensor]:
        t = frames_to_tensor(frames, self.device)
        n, h, w, _ = t.shape
        if n == 0:
            return []
        per_forward = max(1, _MAX_PIXELS_PER_FORWARD // (h * w))
        rows: list[torch.Tensor] = []
        with torch.inference_mode():
            for s in range(0, n, per_forward):
                x, scale = preprocess(t[s : s + per_forward], self.max_size)
                loc, conf, landms = self.runner(x)
                rows.extend(self.postprocess_raw(loc, conf, landms, x.shape[-2:], scale))
        return rows

    def detect(self, frames: Any) -> list[FaceDetections]:
        """Faces per frame. `frames`: (N, H, W, 3) uint8 RGB, numpy or torch (any device), same size."""
        return [self.valid_faces(r) for r in self._run(frames)]

    def detect_raw(self, frames: Any) -> list[np.ndarray]:
        """Post-NMS rows (M, 15) float32 per frame with score > confidence, before the validity filter."""
        return [r.cpu().numpy() for r in self._run(frames)]
