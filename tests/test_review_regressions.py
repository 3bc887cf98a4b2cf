"""Regression tests for bugs found in review: each test failed before its fix."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from ftcn.video import FrameReader, VideoWriter


def _ts_segment(path: Path, width: int, height: int, frames: int) -> bytes:
    """A small H.264 MPEG-TS segment; segments concatenate byte-wise into one stream."""
    with av.open(str(path), mode="w", format="mpegts") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.full((height, width, 3), 40 * i % 256, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path.read_bytes()


def test_frame_size_change_midstream_keeps_first_size(tmp_path: Path) -> None:
    video = tmp_path / "sizes.ts"
    video.write_bytes(_ts_segment(tmp_path / "a.ts", 64, 48, 4) + _ts_segment(tmp_path / "b.ts", 96, 80, 4))
    shapes = [f.rgb.shape for f in FrameReader(video)]
    assert len(shapes) == 8
    assert set(shapes) == {(48, 64, 3)}  # stackable for batched detection, one box coordinate system


def test_video_writer_accepts_frame_larger_than_stream(tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    with VideoWriter(out, 10.0, 33, 25) as w:
        w.write(np.zeros((25, 33, 3), np.uint8))
        w.write(np.zeros((40, 50, 3), np.uint8))
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2


def _predict_status(tmp_path: Path, raw: bytes) -> tuple[int, dict]:
    import asyncio

    from predict_support import StandInAnalyzer, predict_client, serve_cfg

    from ftcn.predict_service import PredictService

    allowed = tmp_path / "allowed"
    allowed.mkdir(exist_ok=True)
    service = PredictService(serve_cfg(allowed_dirs=[str(allowed)]), StandInAnalyzer())

    async def go() -> tuple[int, dict]:
        async with predict_client(service) as client:
            resp = await client.post("/predict", data=raw, headers={"Content-Type": "application/json"})
            return resp.status, await resp.json()

    return asyncio.run(go())


def test_predict_deeply_nested_json_is_a_400(tmp_path: Path) -> None:
    status, body = _predict_status(tmp_path, b"[" * 30000 + b"]" * 30000)
    assert status == 400 and body["error"] == "invalid_json", body


def test_predict_overlong_path_component_is_a_400(tmp_path: Path) -> None:
    name = "a" * 300 + ".mp4"  # longer than NAME_MAX: stat() raises ENAMETOOLONG
    status, body = _predict_status(tmp_path, b'{"file_path": "' + name.encode() + b'"}')
    assert 400 <= status < 500, body


@pytest.mark.parametrize("bad", ["stride: 0", "stride: -2", "max_frames: -1", "stride: fast"])
def test_bad_analyze_config_values_are_one_line_errors(bad, tmp_path, videos_dir, random_ckpt, retinaface_weights,
                                                        capsys) -> None:
    from ftcn.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"analyze:\n  {bad}\n")
    video = videos_dir / "real" / "hdtf_real_RD_Radio10_clip_2s_512.mp4"
    extra = [] if "max_frames" in bad else ["--max-frames", "8"]
    code = main(["analyze", str(video), "--out", str(tmp_path / "o"), "--config", str(cfg), "--checkpoint",
                 str(random_ckpt), "--detector-weights", str(retinaface_weights), "--device", "cpu",
                 "--no-video", "--no-plot", "--quiet", *extra])
    err = capsys.readouterr().err
    assert code != 0 and "analyze." in err and "Traceback" not in err, err


def test_video_with_no_decodable_frame_is_an_error(tmp_path, videos_dir, random_ckpt, retinaface_weights,
                                                   capsys) -> None:
    """Header fine, every packet garbage: nothing was analysed, so no NO_FACE verdict and exit code 0."""
    from ftcn.cli import main

    data = bytearray((videos_dir / "real" / "hdtf_real_RD_Radio10_clip_2s_512.mp4").read_bytes())
    start, moov = data.find(b"mdat") + 4, data.find(b"moov")
    assert 0 < start < moov, "fixture layout: mdat before moov"
    data[start : moov - 4] = bytes(moov - 4 - start)
    video = tmp_path / "zeroed.mp4"
    video.write_bytes(data)
    out = tmp_path / "o"
    code = main(["analyze", str(video), "--out", str(out), "--checkpoint", str(random_ckpt), "--detector-weights",
                 str(retinaface_weights), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "decod" in err and "Traceback" not in err, err
    assert not (out / "report.json").exists()
