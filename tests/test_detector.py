"""RetinaFace detector: parity with the official FTCN detection fixture, batching, NMS, loading."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ftcn.config import load_config
from ftcn.detector import FaceDetections, RetinaFaceDetector, greedy_nms, load_network
from ftcn.errors import WeightsError


@pytest.fixture(scope="module")
def parity(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "retinaface_parity.json").read_text())


@pytest.fixture(scope="module")
def detector(retinaface_weights: Path) -> RetinaFaceDetector:
    return RetinaFaceDetector(retinaface_weights)


def read_rgb(path: Path) -> np.ndarray:
    """As the reference: cv2 decode (BGR), channel-reversed to RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return np.ascontiguousarray(img[..., ::-1])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def assert_rows_match(got: np.ndarray, ref: np.ndarray, min_iou: float, lm_px: float, score_tol: float) -> None:
    """Same number of rows; each reference row has a distinct got row that matches it (order-free)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    used: set[int] = set()
    for r in ref:
        ious = [iou(g[:4], r[:4]) if i not in used else -1.0 for i, g in enumerate(got)]
        best = int(np.argmax(ious))
        assert ious[best] >= min_iou, f"no detection matches reference box {r[:4]} (best IoU {ious[best]:.4f})"
        used.add(best)
        g = got[best]
        assert abs(g[4] - r[4]) <= score_tol, (g[4], r[4])
        assert np.abs(g[5:] - r[5:]).max() <= lm_px, (g[5:], r[5:])


def faces_to_rows(f: FaceDetections) -> np.ndarray:
    return np.concatenate([f.boxes, f.scores[:, None], f.landmarks.reshape(-1, 10)], axis=1)


def ref_detection_rows(dets: list[dict]) -> np.ndarray:
    return np.array([[*d["box"], d["score"], *np.ravel(d["landmarks"])] for d in dets], dtype=np.float64)


# -- parity with the official detection path ------------------------------------------------------------


@pytest.mark.parametrize("index", range(5))
def test_full_res_rgb_matches_reference(detector, parity, fixtures_dir, index):
    item = parity["images"][index]
    img = read_rgb(fixtures_dir / item["file"])
    assert img.shape[:2] == (item["height"], item["width"])
    ref = item["detect_full_res_rgb"]

    faces = detector.detect(img[None])[0]
    assert isinstance(faces, FaceDetections)
    assert faces.boxes.dtype == np.float64 and faces.landmarks.shape == (len(faces), 5, 2)
    assert_rows_match(faces_to_rows(faces), ref_detection_rows(ref["detections"]), 0.99, 1.0, 1e-3)
    assert np.all(np.diff(faces.scores) <= 0), "faces must be best first"

    raw = detector.detect_raw(img[None])[0]
    ref_raw = np.asarray(ref["raw_after_nms_rows"], dtype=np.float64)
    assert len(raw) == ref["num_raw_after_nms"]
    assert_rows_match(raw.astype(np.float64), ref_raw, 0.99, 1.0, 1e-3)
    assert np.all(raw[:, 4] > detector.confidence_threshold)


def test_batch_of_two_identical_frames_equals_batch_of_one(detector, fixtures_dir, parity):
    img = read_rgb(fixtures_dir / parity["images"][3]["file"])
    one = detector.detect_raw(img[None])[0]
    two = detector.detect_raw(np.stack([img, img]))
    assert len(two) == 2
    for rows in two:
        np.testing.assert_array_equal(rows, one)
    # Torch input takes the same path as numpy.
    faces_t = detector.detect(torch.from_numpy(img).unsqueeze(0))[0]
    np.testing.assert_array_equal(faces_t.boxes, detector.detect(img[None])[0].boxes)


def test_frame_without_face_gives_empty_detections(detector):
    frames = np.zeros((2, 360, 640, 3), np.uint8)
    frames[1] = 200
    out = detector.detect(frames)
    assert len(out) == 2
    for f in out:
        assert len(f) == 0
        assert f.boxes.shape == (0, 4) and f.scores.shape == (0,) and f.landmarks.shape == (0, 5, 2)
    empty = FaceDetections.empty()
    assert len(empty) == 0 and empty.landmarks.shape == (0, 5, 2)


def test_max_size_downscale_finds_the_same_faces(retinaface_weights, fixtures_dir, parity):
    # group_51: 8 faces, the 9th candidate scores 0.07, so the kept set is stable under resampling.
    item = parity["images"][1]
    img = read_rgb(fixtures_dir / item["file"])
    big = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    det = RetinaFaceDetector(retinaface_weights, max_size=1024)
    x, scale = det.preprocess(big[None])
    assert max(x.shape[-2:]) == 1024 and scale == pytest.approx((2.0, 2.0), abs=2e-3)
    faces = det.detect(big[None])[0]
    ref = ref_detection_rows(item["detect_full_res_rgb"]["detections"])
    ref[:, [0, 1, 2, 3, *range(5, 15)]] *= 2.0
    assert_rows_match(faces_to_rows(faces), ref, 0.9, 6.0, 0.05)


# -- NMS ------------------------------------------------------------------------------------------------


def sequential_greedy_nms(boxes: np.ndarray, thresh: float) -> list[int]:
    """Plain one-box-at-a-time greedy NMS (boxes already sorted by score), +1 pixel areas, float32."""
    boxes = boxes.astype(np.float32)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in range(i + 1, len(boxes)):
            w = max(np.float32(0), min(x2[i], x2[j]) - max(x1[i], x1[j]) + 1)
            h = max(np.float32(0), min(y2[i], y2[j]) - max(y1[i], y1[j]) + 1)
            inter = np.float32(w * h)
            if inter / (areas[i] + areas[j] - inter) > thresh:
                suppressed[j] = True
    return keep


def test_vectorised_nms_equals_sequential_greedy():
    rs = np.random.RandomState(7)
    sets = []
    for _ in range(6):
        xy = rs.uniform(0, 120, (150, 2))
        wh = rs.uniform(4, 50, (150, 2))
        sets.append(np.concatenate([xy, xy + wh], 1))
    # A suppression chain (each box overlaps its neighbour > 0.4 but not the next one): the greedy answer
    # alternates, which needs the long-chain fallback.
    k = 150
    xs = np.arange(k) * 3.0
    sets.append(np.stack([xs, np.zeros(k), xs + 10, np.full(k, 10.0)], 1))
    for boxes in sets:
        got = greedy_nms(torch.tensor(boxes, dtype=torch.float32)[None], torch.ones(1, len(boxes), dtype=torch.bool), 0.4)
        assert np.flatnonzero(got[0].numpy()).tolist() == sequential_greedy_nms(boxes, 0.4)
    # Batched with padding: frame 1 only has 40 real candidates.
    b = torch.tensor(np.stack(sets[:2]), dtype=torch.float32)
    valid = torch.ones(2, 150, dtype=torch.bool)
    valid[1, 40:] = False
    got = greedy_nms(b, valid, 0.4)
    assert np.flatnonzero(got[0].numpy()).tolist() == sequential_greedy_nms(sets[0], 0.4)
    assert np.flatnonzero(got[1].numpy()).tolist() == sequential_greedy_nms(sets[1][:40], 0.4)


# -- stages reusable by other runners ----------------------------------------------------------------------


def test_postprocess_reuses_pipeline_with_logits(detector, fixtures_dir, parity):
    img = read_rgb(fixtures_dir / parity["images"][4]["file"])
    x, scale = detector.preprocess(img[None])
    assert x.shape == (1, 3, img.shape[0], img.shape[1]) and x.dtype == torch.float32
    assert float(x[0, 0, 0, 0]) == float(img[0, 0, 0]) - 104.0
    detector.network.softmax = False
    try:
        with torch.inference_mode():
            loc, logits, landms = detector.network(x)
    finally:
        detector.network.softmax = True
    faces = detector.postprocess(loc, logits, landms, x.shape[-2:], scale, conf_is_logits=True)[0]
    expected = detector.detect(img[None])[0]
    assert len(faces) == len(expected) > 0
    np.testing.assert_allclose(faces.boxes, expected.boxes, atol=1e-3)
    np.testing.assert_allclose(faces.scores, expected.scores, atol=1e-6)


def test_from_config_uses_detector_section(retinaface_weights):
    cfg = load_config()["detector"]
    cfg = {**cfg, "max_faces": 3, "max_size": 640}
    det = RetinaFaceDetector.from_config(cfg, retinaface_weights)
    assert det.max_faces == 3 and det.max_size == 640 and det.nms_threshold == 0.4
    assert det.confidence_threshold == 0.02 and det.face_threshold == 0.5


# -- weights ----------------------------------------------------------------------------------------------


def test_weights_load_strictly(retinaface_weights, tmp_path):
    net = load_network(retinaface_weights)
    state = torch.load(retinaface_weights, map_location="cpu", weights_only=True)
    assert len(state) == 300 and set(state) == set(net.state_dict())

    renamed = dict(state)
    renamed["fpn.outputX.0.weight"] = renamed.pop("fpn.output1.0.weight")
    p = tmp_path / "renamed.pth"
    torch.save(renamed, p)
    with pytest.raises(WeightsError, match=r"missing key\(s\): fpn\.output1\.0\.weight.*unexpected key\(s\): fpn\.outputX"):
        load_network(p)

    reshaped = dict(state)
    reshaped["ClassHead.0.conv1x1.weight"] = torch.zeros(6, 64, 1, 1)
    torch.save(reshaped, p)
    with pytest.raises(WeightsError, match=r"wrong shape key\(s\): ClassHead\.0\.conv1x1\.weight"):
        load_network(p)

    with pytest.raises(WeightsError, match="not found"):
        load_network(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_network(tmp_path / "junk.pth")


# -- real video sanity -----------------------------------------------------------------------------------


def test_real_video_frames_have_one_clear_face(detector, videos_dir):
    av = pytest.importorskip("av")
    path = videos_dir / "real" / "liveportrait_real_d12_man_talking_512.mp4"
    if not path.is_file():
        pytest.skip(f"video not found: {path}")
    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 40 == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 3:
                break
    out = detector.detect(np.stack(frames))
    for faces in out:
        assert int((faces.scores > 0.9).sum()) == 1
        x1, y1, x2, y2 = faces.boxes[0]
        assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_reference(retinaface_weights, fixtures_dir, parity):
    det = RetinaFaceDetector(retinaface_weights, device="cuda")
    for item in parity["images"][:2]:
        img = torch.from_numpy(read_rgb(fixtures_dir / item["file"])).cuda()
        faces = det.detect(torch.stack([img, img]))
        ref = ref_detection_rows(item["detect_full_res_rgb"]["detections"])
        for f in faces:
            assert_rows_match(faces_to_rows(f), ref, 0.99, 1.0, 1e-3)
