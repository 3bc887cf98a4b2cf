"""Clip alignment as in the official FTCN script (FasterCropAlignXRay), exact and batched.

For each 32-frame clip the face's *big box* (detector box grown by 50 % per side, clipped to
the frame) is cut out of every frame. All crops are placed on a shared black canvas spanning
the union of the big boxes, and ONE non-reflective similarity transform is fitted jointly to
all T*5 landmarks (in canvas coordinates) against the standard 5 points. Every frame is then
warped with that same transform into an ``imsize`` x ``imsize`` RGB image; whatever lies
outside the frame's own big box is black.

Why one transform per clip: FTCN's backbone has temporal kernel size 1 in its spatial layers
and learns from temporal coherence alone. Real faces move smoothly, and a fixed transform keeps
that motion as it is. Aligning each frame on its own landmarks would add landmark jitter
from frame to frame, which looks like the temporal flicker of a forgery, so the score would
go up on real videos. The face may drift inside the output; that is what the model was
trained on.

Why the least squares is measured in canvas pixels: the reference uses MATLAB's cp2tform
recipe. It solves for the map from the TARGET (standard) points to the SOURCE (canvas)
points, u = a x + b y + tx, v = -b x + a y + ty, and then inverts it. The residual it
minimises is therefore in canvas (source) pixels, not output pixels. A forward fit (Umeyama,
cv2.estimateAffinePartial2D) minimises a different error and gives a slightly different
matrix (about 1/100 pixel), which breaks parity with the reference warp. We keep the
reference's form, including its reflective-candidate check and its quirk: the reference
negates the target x in place, so both candidates' residuals are measured against the
x-negated targets.

Two implementations share this maths:

* ``align_clip_cv2``: the exact reference. It warps each frame's black canvas with OpenCV
  4.x ``warpAffine`` (fixed point: 1/32 px coordinates, 15-bit weights). It is bit-identical
  to the fixture under OpenCV 4.x. OpenCV 5 changed the arithmetic (up to 7 grey levels on
  noise).
* ``warp_clips_torch``: a float bilinear ``grid_sample`` over batches of clips on any device,
  for the live GPU pipeline. It follows the same pixel-centre and zero-padding semantics. The
  fixed-point rounding is not reproduced, so the result is within a few grey levels of the
  reference (the tests report the numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# The reference's 5-point template for a 317 px face (left eye, right eye, nose, left/right mouth
# corner). It pads by 30 px, then shifts by (-30, -60) to a 256 px face. We do the same float
# steps because the result is not always the rounded literal (127.574 becomes 127.57400000000001).
_TEMPLATE_317 = np.array(
    [
        [85.82991, 115.7792],
        [169.0532, 114.3381],
        [127.574, 167.0006],
        [90.6964, 204.7014],
        [167.3069, 203.3733],
    ],
    dtype=np.float64,
)

#: Standard 5 points for a 256 px face, bit-identical to the reference's std_points_256.
STD_POINTS_256 = (_TEMPLATE_317 + 30.0) - np.array([30.0, 60.0])


def std_points(imsize: int = 224) -> np.ndarray:
    """Standard 5 points for an ``imsize`` output, computed as the reference does (x * size / 256)."""
    return STD_POINTS_256 * imsize / 256.0


#: Standard 5 points for the 224 px network input.
STD_POINTS_224 = std_points(224)

# Row-vector reflection used by cp2tform's reflective candidate.
_REFLECT_Y = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def big_box(box, frame_hw: tuple[int, int], scale: float = 0.5) -> np.ndarray:
    """Grow a detector box by ``scale`` x its size on every side, as the reference's get_crop_box.

    rint (half to even) first, grow, clip x to [0, W-1] and y to [0, H-1], rint again. Half-way
    values are common (odd sizes), so numpy's rint matters. Returns int64 (x1, y1, x2, y2);
    the slice ``frame[y1:y2, x1:x2]`` is exclusive, so the last row/column is never cropped.
    """
    height, width = int(frame_hw[0]), int(frame_hw[1])
    corners = np.rint(np.asarray(box, dtype=np.float64)[:4]).astype(np.int64).reshape(2, 2)
    grow = scale * (corners[1] - corners[0])
    grown = corners + grow[None, :] * np.array([-1.0, 1.0])[:, None]
    grown[:, 0] = np.clip(grown[:, 0], 0, width - 1)
    grown[:, 1] = np.clip(grown[:, 1], 0, height - 1)
    return np.rint(grown).astype(np.int64).reshape(-1)


def crop_big_box(frame: np.ndarray, box, scale: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Big box of a detector box and the frame's crop for it (a view, not a copy)."""
    bb = big_box(box, frame.shape[:2], scale)
    x1, y1, x2, y2 = (int(v) for v in bb)
    return frame[y1:y2, x1:x2], bb


@dataclass
class ClipTransform:
    """The single transform of a clip: canvas -> output, plus where the canvas sits in the frame."""

    matrix: np.ndarray  # (2, 3) float64 OpenCV matrix, canvas pixels -> output pixels
    left_top: np.ndarray  # (2,) int64 canvas origin (x, y) in frame coordinates
    canvas_wh: np.ndarray  # (2,) int64 canvas width, height
    reflective: bool = False  # True only for mirrored landmark sets (cp2tform's reflective branch)


def _canvas(big_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared canvas of a clip: left_top, (w, h) and each frame's offset d on it."""
    left_top = big_boxes[:, :2].min(0)
    right_bottom = big_boxes[:, 2:].max(0)
    return left_top, right_bottom - left_top, big_boxes[:, :2] - left_top[None, :]


def _canvas_points(big_boxes: np.ndarray, lm5: np.ndarray) -> np.ndarray:
    """Landmarks in canvas coordinates, with the reference's order of operations.

    The reference first makes landmarks crop-relative (lm - x1y1), then adds the canvas offset
    (x1y1 - left_top). In floating point this is not always the same as lm - left_top, so we do
    the same two steps to get identical bits.
    """
    _, _, diff = _canvas(big_boxes)
    return (lm5 - big_boxes[:, None, :2]) + diff[:, None, :]


def _fit_target_to_source(src: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cp2tform non-reflective fit: solve target -> source by lstsq; return (T, Tinv) 3x3 row-vector."""
    n = tgt.shape[0]
    x, y = tgt[:, :1], tgt[:, 1:2]
    ones, zeros = np.ones((n, 1)), np.zeros((n, 1))
    design = np.vstack((np.hstack((x, y, ones, zeros)), np.hstack((y, -x, zeros, ones))))
    rhs = np.vstack((src[:, :1], src[:, 1:2]))
    if np.linalg.matrix_rank(design) < 4:
        raise ValueError("alignment needs at least two distinct target points")
    a, b, tx, ty = np.linalg.lstsq(design, rhs, rcond=-1)[0][:, 0]
    t_inv = np.array([[a, -b, 0.0], [b, a, 0.0], [tx, ty, 1.0]])
    t = np.linalg.inv(t_inv)
    t[:, 2] = np.array([0.0, 0.0, 1.0])
    return t, t_inv


def _apply_rows(t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (np.hstack((pts, np.ones((pts.shape[0], 1)))) @ t)[:, :2]


def estimate_clip_transform(big_boxes: np.ndarray, lm5: np.ndarray, imsize: int = 224) -> ClipTransform:
    """One similarity transform for a whole clip, as FasterCropAlignXRay/estimiate_batch_transform.

    big_boxes: (T, 4) int big boxes; lm5: (T, 5, 2) landmarks in FRAME coordinates. All T*5 pairs
    go into one least-squares fit (see the module docstring for why canvas pixels). The reflective
    candidate is checked exactly as cp2tform does it.
    """
    big_boxes = np.asarray(big_boxes).astype(np.int64)
    lm5 = np.asarray(lm5, dtype=np.float64)
    if big_boxes.ndim != 2 or big_boxes.shape[1] != 4 or lm5.shape != (len(big_boxes), 5, 2):
        raise ValueError(f"expected big_boxes (T,4) and lm5 (T,5,2), got {big_boxes.shape} and {lm5.shape}")
    left_top, canvas_wh, _ = _canvas(big_boxes)
    src = _canvas_points(big_boxes, lm5).reshape(-1, 2)
    tgt = np.repeat(std_points(imsize)[None], len(big_boxes), 0).reshape(-1, 2)

    t1, _ = _fit_target_to_source(src, tgt)
    tgt[:, 0] = -tgt[:, 0]  # the reference's in-place negation: both norms below use these targets
    t2r, _ = _fit_target_to_source(src, tgt)
    t2 = t2r @ _REFLECT_Y
    norm1 = np.linalg.norm(_apply_rows(t1, src) - tgt)
    norm2 = np.linalg.norm(_apply_rows(t2, src) - tgt)
    reflective = not norm1 <= norm2
    t = t2 if reflective else t1
    return ClipTransform(
        matrix=np.ascontiguousarray(t[:, :2].T), left_top=left_top, canvas_wh=canvas_wh, reflective=reflective
    )


def _check_crops(crops: Sequence[np.ndarray], big_boxes: np.ndarray) -> None:
    if len(crops) != len(big_boxes):
        raise ValueError(f"{len(crops)} crops for {len(big_boxes)} big boxes")
    for i, (crop, bb) in enumerate(zip(crops, big_boxes)):
        want = (int(bb[3] - bb[1]), int(bb[2] - bb[0]))
        if tuple(crop.shape[:2]) != want or (crop.ndim == 3 and crop.shape[2] != 3):
            raise ValueError(f"crop {i} has shape {crop.shape}, big box needs {want + (3,)}")


def align_clip_cv2(crops: Sequence[np.ndarray], big_boxes, lm5, imsize: int = 224) -> np.ndarray:
    """Exact reference alignment: (T, imsize, imsize, 3) uint8.

    Every crop goes on its own black canvas at offset d and is warped with cv2.warpAffine using
    default flags (bilinear, constant 0 border). Under OpenCV 4.x this is bit-identical to the
    official code.
    """
    big_boxes = np.asarray(big_boxes).astype(np.int64)
    _check_crops(crops, big_boxes)
    tfm = estimate_clip_transform(big_boxes, lm5, imsize)
    w, h = (int(v) for v in tfm.canvas_wh)
    _, _, diff = _canvas(big_boxes)
    out = np.empty((len(crops), imsize, imsize, 3), dtype=np.uint8)
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    for i, (crop, (x, y)) in enumerate(zip(crops, diff)):
        canvas.fill(0)
        ch, cw = crop.shape[:2]
        canvas[y : y + ch, x : x + cw] = crop
        out[i] = cv2.warpAffine(canvas, tfm.matrix, (imsize, imsize))
    return out


# --------------------------------------------------------------------------- torch, batched


def _similarity_design(tgt: torch.Tensor) -> torch.Tensor:
    """(B, 2N, 4) cp2tform design matrix for targets (B, N, 2)."""
    x, y = tgt[..., 0], tgt[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    top = torch.stack((x, y, one, zero), -1)
    bottom = torch.stack((y, -x, zero, one), -1)
    return torch.cat((top, bottom), 1)


def _fit_target_to_source_torch(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Batched cp2tform non-reflective fit; returns T (B, 3, 3) row-vector, source -> target."""
    design = _similarity_design(tgt)
    rhs = torch.cat((src[..., 0], src[..., 1]), 1).unsqueeze(-1)
    a, b, tx, ty = torch.linalg.lstsq(design, rhs).solution[..., 0].unbind(-1)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    t_inv = torch.stack(
        (torch.stack((a, -b, zero), -1), torch.stack((b, a, zero), -1), torch.stack((tx, ty, one), -1)), 1
    )
    t = torch.linalg.inv(t_inv)
    t[:, :, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=t.dtype, device=t.device)
    return t


def estimate_clip_transforms_torch(
    big_boxes: torch.Tensor, lm5: torch.Tensor, imsize: int = 224
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched ``estimate_clip_transform`` on the tensors' device, so the GPU path has no CPU round trip.

    big_boxes (B, T, 4) and lm5 (B, T, 5, 2) in frame coordinates (any numeric dtype). Returns
    ``(matrices (B, 2, 3), left_tops (B, 2))``, both float64 on the same device. Same maths as
    the numpy version, including the reflective check. torch.linalg.lstsq uses a different
    LAPACK driver, so the result agrees to ~1e-12, not bit for bit.
    """
    bb = torch.as_tensor(big_boxes).to(torch.float64)
    lm = torch.as_tensor(lm5, device=bb.device).to(torch.float64)
    if bb.ndim != 3 or bb.shape[-1] != 4 or lm.shape != (*bb.shape[:2], 5, 2):
        raise ValueError(
            f"expected big_boxes (B,T,4) and lm5 (B,T,5,2), got {tuple(bb.shape)}, {tuple(lm.shape)}"
        )
    n_clips, n_frames = bb.shape[:2]
    left_top = bb[..., :2].amin(1)
    diff = bb[..., :2] - left_top[:, None, :]
    src = ((lm - bb[..., None, :2]) + diff[..., None, :]).reshape(n_clips, -1, 2)
    std = torch.as_tensor(std_points(imsize), dtype=torch.float64, device=bb.device)
    tgt = std.repeat(n_frames, 1).expand(n_clips, -1, -1).clone()

    t1 = _fit_target_to_source_torch(src, tgt)
    tgt[..., 0] = -tgt[..., 0]
    reflect = torch.as_tensor(_REFLECT_Y, dtype=torch.float64, device=bb.device)
    t2 = _fit_target_to_source_torch(src, tgt) @ reflect
    src_h = torch.cat((src, torch.ones_like(src[..., :1])), -1)
    norm1 = torch.linalg.vector_norm((src_h @ t1)[..., :2] - tgt, dim=(1, 2))
    norm2 = torch.linalg.vector_norm((src_h @ t2)[..., :2] - tgt, dim=(1, 2))
    t = torch.where((norm1 <= norm2)[:, None, None], t1, t2)
    return t[:, :, :2].transpose(1, 2).contiguous(), left_top


def _slot_extent(size: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Buffer pixels a crop side of ``size`` occupies after scaling by ``scale`` (round to nearest)."""
    return torch.floor(size * scale + 0.5)


def pack_crops(
    crops: Sequence[np.ndarray],
    big_boxes,
    slot: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.uint8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack one clip's crops into a fixed-capacity buffer for ``warp_clips_torch``.

    Returns ``(buffer (T, 3, slot, slot), scales (T,) float64)``. Each RGB HWC uint8 crop is
    written at the top-left of its zeroed slot. A crop larger than the slot is downscaled by
    ``scale = slot / max(h, w)`` (bilinear, antialias, scale given exactly to interpolate, so
    buffer pixel j has its centre at crop coordinate (j + 0.5) / scale - 0.5), and the scale is
    recorded. It is 1.0 when the crop fits. Stack the results of several clips for a batch.
    """
    big_boxes = np.asarray(big_boxes).astype(np.int64)
    _check_crops(crops, big_boxes)
    buf = torch.zeros((len(crops), 3, slot, slot), dtype=dtype, device=device)
    scales = torch.ones(len(crops), dtype=torch.float64)
    for i, crop in enumerate(crops):
        h, w = crop.shape[:2]
        if h == 0 or w == 0:
            continue
        img = torch.from_numpy(np.ascontiguousarray(crop)).to(device).permute(2, 0, 1)
        if max(h, w) > slot:
            s = slot / max(h, w)
            # Replicate-pad right/bottom so the last, partly covered buffer pixel gets content; the
            # crop then ends at round(size * s) pixels, the nearest pixel edge to where it should.
            pad = int(np.ceil(2.0 / s)) + 1  # enough for floor((size + pad) * s) >= round(size * s)
            padded = F.pad(img[None].float(), (0, pad, 0, pad), mode="replicate")
            small = F.interpolate(
                padded,
                scale_factor=s,
                mode="bilinear",
                antialias=True,
                align_corners=False,
                recompute_scale_factor=False,
            )[0]
            ext_h, ext_w = (
                min(slot, int(v)) for v in _slot_extent(torch.tensor([h, w], dtype=torch.float64), s)
            )
            img = small[:, :ext_h, :ext_w]
            scales[i] = s
        if img.is_floating_point() and not dtype.is_floating_point:
            img = img.round().clamp(0, 255)
        buf[i, :, : img.shape[1], : img.shape[2]] = img.to(dtype)
    return buf, scales.to(device)


def warp_clips_torch(
    crops: torch.Tensor,
    big_boxes: torch.Tensor,
    scales: torch.Tensor,
    matrices: torch.Tensor,
    left_tops: torch.Tensor,
    imsize: int = 224,
) -> torch.Tensor:
    """Warp a batch of clips with one ``grid_sample`` call. This is the live pipeline's alignment path.

    Inputs (all on one device; big_boxes/scales/matrices/left_tops may be any numeric dtype):

    * ``crops`` (B, T, 3, S, S), uint8 or float, RGB, values 0..255. These are fixed-capacity
      buffers: frame t's big-box crop (H_t x W_t, H_t = y2 - y1, W_t = x2 - x1) is written at the
      top-left of its S x S slot. It may be downscaled by ``scales[b, t]`` (buffer px per frame px;
      1.0 when the crop fits), with pixel centres mapped as F.interpolate(align_corners=False,
      scale_factor=s) maps them: buffer pixel j has its centre at crop coordinate (j + .5)/s - .5.
      The crop must fill round(W_t * s) x round(H_t * s) buffer pixels. ``pack_crops`` builds such
      buffers. The rest of the slot is only touched with a bilinear weight of 0 (up to float
      rounding, ~1e-5), so a reused ring buffer does not need clearing if it holds finite values.
    * ``big_boxes`` (B, T, 4): the crops' big boxes, x1, y1, x2, y2 in frame coordinates.
    * ``scales`` (B, T), as above.
    * ``matrices`` (B, 2, 3) and ``left_tops`` (B, 2): the clip transforms from
      ``estimate_clip_transforms_torch`` (or ``estimate_clip_transform``'s matrix and left_top).
      A matrix maps canvas pixels to output pixels; the canvas origin is left_top in the frame.

    Output: (B, T, 3, imsize, imsize) float32, 0..255 (not rounded), RGB, on the crops' device.

    Semantics, as cv2.warpAffine on the reference's black canvas: pixel centres are at integer
    coordinates, bilinear, black outside the frame's own crop. Per clip, one float64 grid of
    canvas coordinates (the inverse of the clip's matrix at every output pixel centre) is shared
    by all T frames. Frame t sees it moved by d_t = big_box_t(x1, y1) - left_top, in crop
    pixels. The edge toward black is done in crop pixels, as OpenCV does it: the sample
    coordinate is clamped into the crop, and the result is multiplied by the bilinear coverage
    clamp(x + 1, 0, 1) * clamp(W - x, 0, 1) (same for y). So a downscaled slot blurs the content
    but does not widen the black fade at the crop edge. Clamped crop coordinates become buffer
    coordinates (times s_t, pixel centres), are normalised, and go through
    grid_sample(align_corners=False). Float bilinear does not reproduce OpenCV 4's 1/32 px fixed
    point. On the fixture the result is within 1 grey level of an exact float warp (OpenCV 5)
    and within a few levels of OpenCV 4 (mean < 1). Memory: about B*T*imsize^2*20 bytes of
    float32 grid and weights, plus a float32 copy of ``crops`` when it is uint8.
    """
    if crops.ndim != 5 or crops.shape[2] != 3 or crops.shape[3] != crops.shape[4]:
        raise ValueError(f"crops must be (B, T, 3, S, S), got {tuple(crops.shape)}")
    device = crops.device
    n_clips, n_frames, _, slot, _ = crops.shape
    bb = torch.as_tensor(big_boxes, device=device).to(torch.float64).reshape(n_clips, n_frames, 4)
    s = torch.as_tensor(scales, device=device).to(torch.float64).reshape(n_clips, n_frames, 1)
    m = torch.as_tensor(matrices, device=device).to(torch.float64).reshape(n_clips, 2, 3)
    lt = torch.as_tensor(left_tops, device=device).to(torch.float64).reshape(n_clips, 2)

    # Output pixel centres -> canvas coordinates, float64, one grid per clip.
    coords = torch.arange(imsize, dtype=torch.float64, device=device)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    out_xy = torch.stack((gx, gy), -1).reshape(1, -1, 2)  # (1, N, 2), N = imsize^2
    inv_a = torch.linalg.inv(m[:, :, :2])
    canvas_xy = ((out_xy - m[:, None, :, 2]) @ inv_a.transpose(1, 2)).to(torch.float32)  # (B, N, 2)

    # Per frame, in crop pixels: coverage of the crop (cv2's bilinear fade into black).
    d = (bb[..., :2] - lt[:, None, :]).to(torch.float32)  # (B, T, 2)
    wh = (bb[..., 2:] - bb[..., :2]).clamp(min=0)  # (B, T, 2) float64
    crop_xy = canvas_xy[:, None] - d[:, :, None, :]  # (B, T, N, 2)
    wh32 = wh.to(torch.float32)[:, :, None, :]
    cover = ((crop_xy + 1.0).clamp(0.0, 1.0) * (wh32 - crop_xy).clamp(0.0, 1.0)).prod(-1)
    cover = cover * (wh > 0).all(-1).to(torch.float32)[..., None]  # (B, T, N)

    # Clamp into the buffer's filled extent, then to grid_sample's normalised coordinates.
    s32 = s.to(torch.float32)[:, :, None, :]
    ext = _slot_extent(wh, s).clamp(1, slot).to(torch.float32)[:, :, None, :]
    buf_xy = ((crop_xy + 0.5) * s32 - 0.5).clamp(min=0.0)
    buf_xy = torch.minimum(buf_xy, ext - 1.0)
    grid = (buf_xy * (2.0 / slot) + (1.0 / slot - 1.0)).reshape(n_clips * n_frames, imsize, imsize, 2)

    src = crops.reshape(n_clips * n_frames, 3, slot, slot).to(torch.float32)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out * cover.reshape(n_clips * n_frames, 1, imsize, imsize)
    return out.reshape(n_clips, n_frames, 3, imsize, imsize)


def align_clip_torch(
    crops: Sequence[np.ndarray],
    big_boxes,
    lm5,
    imsize: int = 224,
    device: str | torch.device = "cpu",
    slot: int | None = None,
) -> np.ndarray:
    """One clip through the batched torch path: (T, imsize, imsize, 3) uint8, like ``align_clip_cv2``.

    ``slot`` defaults to the largest crop side (no downscaling). The transform comes from
    ``estimate_clip_transforms_torch`` on ``device``.
    """
    big_boxes = np.asarray(big_boxes).astype(np.int64)
    _check_crops(crops, big_boxes)
    if slot is None:
        slot = max(1, max(max(c.shape[:2]) for c in crops))
    buf, scales = pack_crops(crops, big_boxes, slot, device=device)
    bb = torch.as_tensor(big_boxes, device=device)[None]
    lm = torch.as_tensor(np.asarray(lm5, dtype=np.float64), device=device)[None]
    matrices, left_tops = estimate_clip_transforms_torch(bb, lm, imsize)
    out = warp_clips_torch(buf[None], bb, scales[None], matrices, left_tops, imsize)[0]
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def align_clip(
    crops: Sequence[np.ndarray],
    big_boxes,
    lm5,
    imsize: int = 224,
    backend: str = "cv2",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Dispatch on the config's ``align.backend``: "cv2" (exact), "torch", or "auto" (torch on CUDA)."""
    if backend == "auto":
        backend = "torch" if torch.device(device).type == "cuda" else "cv2"
    if backend == "cv2":
        return align_clip_cv2(crops, big_boxes, lm5, imsize)
    if backend == "torch":
        return align_clip_torch(crops, big_boxes, lm5, imsize, device=device)
    raise ValueError(f"unknown alignment backend {backend!r} (cv2, torch or auto)")
