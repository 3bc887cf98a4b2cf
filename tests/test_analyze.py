"""`ftcn-stream analyze` end to end on real videos, with the random FTCN checkpoint fixture."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from ftcn.cli import COMMAND_MODULES, main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def analyze_args(video: Path, out: Path, ckpt: Path, det: Path, *extra: str) -> list[str]:
    return ["analyze", str(video), "--out", str(out), "--checkpoint", str(ckpt), "--detector-weights", str(det),
            "--quiet", *extra]


@pytest.mark.slow
def test_end_to_end_single_face(tmp_path, videos_dir, random_ckpt, retinaface_weights, capsys) -> None:
    video = videos_dir / "real" / "liveportrait_real_d12_man_talking_512.mp4"
    code, _, err = run_cli(
        analyze_args(video, tmp_path, random_ckpt, retinaface_weights, "--max-frames", "64", "--stride", "16"), capsys
    )
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    for name in ("report.json", "annotated.mp4", "timeline.png"):
        assert (tmp_path / name).stat().st_size > 0, name

    assert report["num_frames"] == 64
    assert len(report["tracks"]) == 1
    track = report["tracks"][0]
    assert (track["first_frame"], track["last_frame"], track["num_frames"]) == (0, 63, 64)
    assert [(c["first_frame"], c["last_frame"]) for c in track["clips"]] == [(0, 31), (16, 47), (32, 63)]

    # per-frame score == mean of the clips covering that frame
    covering = defaultdict(list)
    for c in track["clips"]:
        for f in range(c["first_frame"], c["last_frame"] + 1):
            covering[f].append(c["score"])
    for frame in report["frames"]:
        assert frame["score"] == pytest.approx(np.mean(covering[frame["frame"]]), abs=1e-12)
        assert len(frame["faces"]) == 1
    scores = [c["score"] for c in track["clips"]]
    assert report["df_probability"] == pytest.approx(np.mean(scores), abs=1e-12)
    assert all(0.0 < s < 1.0 for s in scores)  # a probability, one sigmoid
    assert report["prediction"] == ("FAKE" if report["df_probability"] > report["threshold"] else "REAL")
    assert report["threshold"] == pytest.approx(0.002584857167676091)
    assert len(report["model"]["sha256"]) == 64

    # the annotated video decodes and has every analysed frame
    import av

    with av.open(str(tmp_path / "annotated.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 64


@pytest.mark.slow
def test_clip_scores_match_direct_model_call(tmp_path, videos_dir, random_ckpt, retinaface_weights) -> None:
    """The scores in the report are the model's output on the aligned clips, batched or not."""
    from ftcn.analyze import Analyzer
    from ftcn.clip_extraction import ClipExtractor
    from ftcn.config import load_config
    from ftcn.model import normalize_clips

    cfg = load_config()
    analyzer = Analyzer(cfg, checkpoint=random_ckpt, detector_weights=retinaface_weights, device="cpu")
    video = videos_dir / "real" / "hdtf_real_RD_Radio10_clip_2s_512.mp4"
    report = analyzer.analyze(video, max_frames=40, stride=8, batch_size=2, write_video=False, write_plot=False)
    clips = list(ClipExtractor(analyzer.detector, cfg, 8).run(str(video), max_frames=40))
    assert len(clips) == report["num_clips"] == 2
    with torch.inference_mode():
        direct = [float(analyzer.model(normalize_clips(torch.from_numpy(c.frames[None])))) for c in clips]
    got = [c["score"] for t in report["tracks"] for c in t["clips"]]
    np.testing.assert_allclose(got, direct, atol=1e-5)


@pytest.mark.slow
def test_several_faces(tmp_path, videos_dir, random_ckpt, retinaface_weights, capsys) -> None:
    video = videos_dir / "other" / "facefusion_real_dance_four_people_360p.mp4"
    code, _, err = run_cli(
        analyze_args(video, tmp_path, random_ckpt, retinaface_weights, "--max-frames", "32", "--stride", "64",
                     "--no-video"), capsys
    )
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_tracks"] >= 3
    assert (tmp_path / "timeline.png").stat().st_size > 0
    assert all(t["score"] is not None for t in report["tracks"])


def test_no_face_video(tmp_path, videos_dir, random_ckpt, retinaface_weights, capsys) -> None:
    video = videos_dir / "other" / "tpsmm_no_face_cartoon_robot.mp4"
    code, _, err = run_cli(analyze_args(video, tmp_path, random_ckpt, retinaface_weights, "--no-video"), capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["prediction"] == "NO_FACE"
    assert report["df_probability"] is None
    assert report["num_tracks"] == 0 and report["num_frames"] == 180


@pytest.mark.slow
def test_shorter_than_one_clip_is_mirror_padded(tmp_path, videos_dir, random_ckpt, retinaface_weights, capsys):
    video = videos_dir / "other" / "roop_fake_output_1s_24frames_1080p.mp4"
    code, _, err = run_cli(
        analyze_args(video, tmp_path, random_ckpt, retinaface_weights, "--stride", "32", "--no-video"), capsys
    )
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_frames"] == 24
    main_track = max(report["tracks"], key=lambda t: t["num_frames"])
    assert main_track["num_frames"] == 24 and main_track["mirror_padded"]
    assert len(main_track["clips"]) == 3  # padded to 24 + 62 entries, windows at 0, 32, 54
    assert report["prediction"] in ("REAL", "FAKE")


@pytest.mark.slow
def test_yuv444p_video(tmp_path, videos_dir, random_ckpt, retinaface_weights, capsys) -> None:
    video = videos_dir / "real" / "ffpp_c23_original_004_newsreader_man.mp4"
    code, _, err = run_cli(
        analyze_args(video, tmp_path, random_ckpt, retinaface_weights, "--max-frames", "32", "--stride", "32"),
        capsys,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["video_info"]["pix_fmt"] == "yuv444p"
    assert report["num_tracks"] == 1 and report["num_clips"] == 1


@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "empty"])
def test_bad_video_is_a_clear_error(kind, tmp_path, videos_dir, random_ckpt, retinaface_weights, capsys) -> None:
    path = tmp_path / "input.mp4"
    if kind == "text":
        path.write_text("this is not a video\n" * 100)
    elif kind == "truncated":
        data = (videos_dir / "real" / "liveportrait_real_d12_man_talking_512.mp4").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    code, _, err = run_cli(analyze_args(path, tmp_path / "out", random_ckpt, retinaface_weights), capsys)
    assert code == 2
    assert err.startswith("ftcn-stream: error:") and "Traceback" not in err
    assert str(path) in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_truncated_faststart_video_keeps_decoded_frames(
    tmp_path, videos_dir, random_ckpt, retinaface_weights, capsys
) -> None:
    """A file cut mid-stream whose index is at the front is analysed up to the cut, with a warning."""
    import av

    src = videos_dir / "other" / "tpsmm_no_face_cartoon_robot.mp4"
    full = tmp_path / "faststart.mp4"
    with av.open(str(src)) as inp, av.open(str(full), "w", options={"movflags": "faststart"}) as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for pkt in inp.demux(s_in):
            if pkt.dts is not None:
                pkt.stream = s_out
                out.mux(pkt)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])

    code, _, err = run_cli(analyze_args(cut, tmp_path / "out", random_ckpt, retinaface_weights, "--no-video"), capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert 0 < report["num_frames"] < 180
    assert any("could be decoded" in w for w in report["warnings"])
    assert report["prediction"] == "NO_FACE"


def test_wrong_checkpoint_is_a_clear_error(tmp_path, videos_dir, random_ckpt, retinaface_weights, capsys) -> None:
    sd = torch.load(random_ckpt, map_location="cpu", weights_only=True)
    key = "module.resnet.head.time_T.mlp_head.1.weight"
    sd[key] = torch.zeros(2, 1024, dtype=sd[key].dtype)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    video = videos_dir / "real" / "hdtf_real_RD_Radio10_clip_2s_512.mp4"
    code, _, err = run_cli(analyze_args(video, tmp_path / "out", bad, retinaface_weights), capsys)
    assert code == 2 and "Traceback" not in err
    assert "resnet.head.time_T.mlp_head.1.weight" in err


def test_missing_checkpoint_names_fetch_command(tmp_path, videos_dir, retinaface_weights, capsys) -> None:
    video = videos_dir / "real" / "hdtf_real_RD_Radio10_clip_2s_512.mp4"
    code, _, err = run_cli(
        ["analyze", str(video), "--weights-dir", str(tmp_path / "empty"), "--detector-weights",
         str(retinaface_weights), "--quiet"], capsys
    )
    assert code == 2
    assert "ftcn-stream weights fetch" in err and str(tmp_path / "empty") in err
    assert len(err.strip().splitlines()) == 1


def test_help_for_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "ftcn.cli", "--help"], capture_output=True, text=True, check=True)
    names = [m.rsplit(".", 1)[1].replace("_", "-") for m in COMMAND_MODULES]
    for name in names:
        assert name in out.stdout
        sub = subprocess.run([sys.executable, "-m", "ftcn.cli", name, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0, sub.stderr
        assert "usage:" in sub.stdout


@pytest.mark.slow
def test_engine_backend_from_config_with_fallback(tmp_path, videos_dir, random_ckpt, retinaface_weights, caplog):
    """engine.backend tensorrt falls back (TensorRT is absent here) to ONNX Runtime; scores match torch."""
    import logging

    from ftcn.analyze import Analyzer
    from ftcn.config import load_config

    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    video = videos_dir / "real" / "hdtf_real_RD_Radio10_clip_2s_512.mp4"
    kw = dict(max_frames=32, stride=32, write_video=False, write_plot=False)
    ref = Analyzer(load_config(), random_ckpt, "cpu", retinaface_weights).analyze(video, **kw)
    cfg = load_config(overrides={"engine": {"backend": "tensorrt", "cache_dir": str(tmp_path / "engines")}})
    with caplog.at_level(logging.INFO):
        analyzer = Analyzer(cfg, random_ckpt, "cpu", retinaface_weights)
    assert analyzer.engine.startswith("onnxruntime")
    assert analyzer.model is None
    got = analyzer.analyze(video, **kw)
    assert got["model"]["engine"].startswith("onnxruntime")
    assert got["num_clips"] == ref["num_clips"] == 1
    assert got["df_probability"] == pytest.approx(ref["df_probability"], abs=1e-4)
    assert "tensorrt" in caplog.text.lower()
