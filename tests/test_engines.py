"""Engines: BN-folded torch backend, ONNX export + ONNX Runtime, fallback, build_engines.py, TensorRT (GPU).

FTCN forwards cost seconds on CPU, so the reference model, parity data and the ONNX export (in a
module-scoped cache dir) are shared, and each backend runs the FTCN fixture once at batch 1.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from engines.base import EngineOptions
from engines.folded import CONV_IMPLS, FoldedConv, fold_bn
from engines.loader import load
from engines.networks import load_reference
from engines.parity import max_abs_diff
from ftcn.detector import preprocess
from ftcn.model import normalize_clips

REPO = Path(__file__).resolve().parents[1]
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "needs a CUDA device (torch.cuda.is_available() is False)"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine_cache")


@pytest.fixture(scope="module")
def parity(fixtures_dir: Path) -> dict:
    return torch.load(fixtures_dir / "ftcn_parity_io.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def clip0(parity: dict) -> torch.Tensor:
    return normalize_clips(parity["clips_uint8_NTHWC"][:1])


@pytest.fixture(scope="module")
def ftcn_ref(random_ckpt: Path) -> torch.nn.Module:
    return load_reference("ftcn", random_ckpt)


@pytest.fixture(scope="module")
def rf_ref(retinaface_weights: Path) -> torch.nn.Module:
    return load_reference("retinaface", retinaface_weights)


@pytest.fixture(scope="module")
def rf_images(fixtures_dir: Path) -> list[torch.Tensor]:
    import cv2

    out = []
    for name in ("12_Group_Group_12_Group_Group_12_24.jpg", "300w.png"):
        img = cv2.imread(str(fixtures_dir / "images" / name), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        out.append(preprocess(torch.from_numpy(img)[None])[0].contiguous())
    return out


@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize("kt", [1, 3, 5])
def test_folded_conv_forms_match_conv_bn(impl: str, kt: int) -> None:
    g = torch.Generator().manual_seed(kt)
    conv = torch.nn.Conv3d(8, 6, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
    bn = torch.nn.BatchNorm3d(6).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.normal_(0, 0.2, generator=g)
        bn.running_mean.normal_(0, 0.5, generator=g)
        bn.running_var.uniform_(0.5, 2.0, generator=g)
    x = torch.randn(2, 8, 7, 5, 4, generator=g)
    layer = FoldedConv(*fold_bn(conv.weight, bn), impl)
    if impl in ("conv3d_cl", "matmul"):
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        assert torch.allclose(layer(x), bn(conv(x)), atol=1e-5, rtol=1e-5)


def test_torch_backend_folded_bn_matches_core(random_ckpt: Path, ftcn_ref, clip0, parity) -> None:
    engine = load(random_ckpt, "ftcn", "torch", "fp32", "cpu", max_batch=4, reference=ftcn_ref)
    assert engine.backend == "torch" and engine.fallback_reason is None
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in engine.module.modules())
    out = engine.infer(clip0)
    assert out.shape == (1, 1) and out.dtype == torch.float32
    assert (out - parity["output"][:1]).abs().max().item() <= 1e-5


def test_ftcn_onnx_export_and_onnxruntime(random_ckpt: Path, ftcn_ref, clip0, parity, cache: Path) -> None:
    engine = load(random_ckpt, "ftcn", "onnxruntime", "fp32", "cpu", max_batch=4, reference=ftcn_ref,
                  fallback=False, cache_dir=str(cache))
    graph = onnx.load(str(engine.onnx_file), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["clips"] and [o.name for o in graph.output] == ["prob"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    out = engine.infer(clip0)
    assert out.shape == (1, 1)
    assert (out - parity["output"][:1]).abs().max().item() <= 1e-4


def test_retinaface_onnx_export_and_onnxruntime(retinaface_weights: Path, rf_ref, rf_images, cache: Path) -> None:
    engine = load(retinaface_weights, "retinaface", "onnxruntime", "fp32", "cpu", max_batch=2, reference=rf_ref,
                  fallback=False, cache_dir=str(cache))
    graph = onnx.load(str(engine.onnx_file), load_external_data=False).graph
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", "", "height", "width"]
    for x in rf_images:  # two different sizes: dynamic height/width
        with torch.inference_mode():
            expected = rf_ref(x)
        assert max_abs_diff(engine.infer(x), expected) <= 1e-4
    x2 = torch.cat([rf_images[1], rf_images[1].flip(-1)])  # dynamic batch
    with torch.inference_mode():
        expected2 = rf_ref(x2)
    out2 = engine.infer(x2)
    assert out2[0].shape == expected2[0].shape
    assert max_abs_diff(out2, expected2) <= 1e-4


def test_torch_retinaface_and_batch_chunking(retinaface_weights: Path, rf_ref) -> None:
    engine = load(retinaface_weights, "retinaface", "torch", "fp32", "cpu", max_batch=1, reference=rf_ref)
    x = torch.randn(3, 3, 96, 128, generator=torch.Generator().manual_seed(1)) * 50
    with torch.inference_mode():
        expected = rf_ref(x)
    out = engine.infer(x)  # 3 > max_batch: run in chunks of 1 and concatenated
    assert [o.shape[0] for o in out] == [3, 3, 3]
    assert max_abs_diff(out, expected) <= 1e-4


def test_fallback_to_next_backend_is_logged(retinaface_weights: Path, rf_ref, cache: Path, caplog) -> None:
    if HAS_TRT and HAS_CUDA:
        pytest.skip("TensorRT is usable here; the fallback path is not taken")
    with caplog.at_level("INFO", logger="ftcn.engines"):
        engine = load(retinaface_weights, "retinaface", "tensorrt", "fp16", "cpu", max_batch=2, reference=rf_ref,
                      cache_dir=str(cache))
    assert engine.backend == "onnxruntime"
    assert engine.fallback_reason and engine.fallback_reason.startswith("tensorrt:")
    assert any("fallback" in r.message and "tensorrt" in r.message for r in caplog.records)


def test_options_from_config() -> None:
    cfg = {"engine": {"backend": "tensorrt", "torch": {"cuda_graphs": True}, "tensorrt": {"opt_batch": 8},
                      "retinaface_hw": [480, 640]}}
    opts = EngineOptions.from_config(cfg, compile=True)
    assert opts.cuda_graphs and opts.compile and opts.opt_batch == 8 and opts.retinaface_hw == (480, 640)
    assert opts.extra == {"backend": "tensorrt"}


@pytest.mark.slow
def test_build_engines_onnxruntime_end_to_end(random_ckpt: Path, retinaface_weights: Path, cache: Path) -> None:
    cmd = [sys.executable, str(REPO / "build_engines.py"), "--backend", "onnxruntime", "--device", "cpu",
           "--ftcn-weights", str(random_ckpt), "--retinaface-weights", str(retinaface_weights),
           "--cache-dir", str(cache), "--batch-sizes", "1", "--retinaface-size", "320x320"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ftcn") or line.startswith("| retinaface")]
    assert len(rows) == 2, res.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "onnxruntime" and cells[4] == "1"
        assert float(cells[5]) <= 1e-4 and float(cells[8]) > 0


# --- GPU only -------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
def test_torch_backend_cuda_fp16_compile_and_graphs(random_ckpt: Path, ftcn_ref, parity) -> None:
    x = normalize_clips(parity["clips_uint8_NTHWC"]).cuda()
    engine = load(random_ckpt, "ftcn", "torch", "fp16", "cuda", max_batch=4, reference=ftcn_ref,
                  compile=True, cuda_graphs=True)
    out = engine.infer(x)
    assert (out.cpu() - parity["output"]).abs().max().item() <= 1e-2
    assert (engine.infer(x[:1]).cpu() - parity["output"][:1]).abs().max().item() <= 1e-2  # another bucket
    assert set(engine._graphs) >= {(1, 3, 32, 224, 224), (2, 3, 32, 224, 224)}


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
def test_onnxruntime_cuda_matches_torch(random_ckpt: Path, ftcn_ref, clip0, parity, cache: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    engine = load(random_ckpt, "ftcn", "onnxruntime", "fp32", "cuda", max_batch=2, reference=ftcn_ref,
                  fallback=False, cache_dir=str(cache))
    assert (engine.infer(clip0.cuda()).cpu() - parity["output"][:1]).abs().max().item() <= 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="tensorrt not installed")
def test_tensorrt_fp16_engine_parity_and_cache(random_ckpt: Path, ftcn_ref, parity, cache: Path) -> None:
    if not HAS_CUDA:
        pytest.skip(NO_CUDA)
    engine = load(random_ckpt, "ftcn", "tensorrt", "fp16", "cuda", max_batch=4, reference=ftcn_ref,
                  fallback=False, cache_dir=str(cache), opt_batch=2)
    assert engine.engine_file.is_file() and engine.engine_file.with_suffix(".json").is_file()
    x = normalize_clips(parity["clips_uint8_NTHWC"]).cuda()
    assert (engine.infer(x).cpu() - parity["output"]).abs().max().item() <= 1e-2
    again = load(random_ckpt, "ftcn", "tensorrt", "fp16", "cuda", max_batch=4, reference=ftcn_ref,
                 fallback=False, cache_dir=str(cache), opt_batch=2)
    assert again.engine_file == engine.engine_file


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="tensorrt not installed")
def test_tensorrt_retinaface(retinaface_weights: Path, rf_ref, cache: Path) -> None:
    if not HAS_CUDA:
        pytest.skip(NO_CUDA)
    engine = load(retinaface_weights, "retinaface", "tensorrt", "fp16", "cuda", max_batch=2, reference=rf_ref,
                  fallback=False, cache_dir=str(cache), retinaface_hw=(320, 320))
    x = torch.randn(2, 3, 320, 320, generator=torch.Generator().manual_seed(3)) * 50
    with torch.inference_mode():
        expected = rf_ref(x)
    out = engine.infer(x.cuda())
    assert max(F.l1_loss(o.cpu(), e).item() for o, e in zip(out, expected)) < 1e-2


def test_detector_backend_from_config_matches_torch(tmp_path, monkeypatch, fixtures_dir, retinaface_weights):
    """detector.backend: onnxruntime runs the network through the engine; decode/NMS unchanged."""
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    import cv2

    from ftcn.config import load_config
    from ftcn.detector import RetinaFaceDetector

    monkeypatch.setenv("FTCN_ENGINE_DIR", str(tmp_path))
    det_cfg = load_config()["detector"]
    img = cv2.imread(str(fixtures_dir / "images" / "12_Group_Group_12_Group_Group_12_51.jpg"))[..., ::-1].copy()
    ref = RetinaFaceDetector.from_config(det_cfg, retinaface_weights).detect(img[None])[0]
    det = RetinaFaceDetector.from_config({**det_cfg, "backend": "onnxruntime"}, retinaface_weights)
    got = det.detect(img[None])[0]
    assert det.engine == "onnxruntime/fp32"
    assert len(got) == len(ref) > 0
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-2)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)
