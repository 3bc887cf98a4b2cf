"""Training pipeline: preprocess -> train -> evaluate on a tiny set built from the shared videos.

The FTCN forward is seconds per clip on CPU, so the data is 2 clips (1 real, 1 fake video, one
clip each) and every run is a handful of steps. Expensive artefacts are session fixtures shared by
the tests that inspect them.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ftcn.checkpoint import load_ftcn, read_state_dict
from ftcn.cli import main
from ftcn.model import normalize_clips
from ftcn.training import layout, metrics
from ftcn.training.augment import ClipAugment
from ftcn.training.dataset import ClipDataset, split_by_csv, stratified_split
from ftcn.training.preprocess import clip_stride, select_evenly

REAL = "real/hdtf_real_RD_Radio10_clip_2s_512.mp4"
FAKE = "fake/DERIVED_deepfacelive_fake_right_panel_Zahar_Lupin_2_640x360.mp4"
NO_FACE = "other/tpsmm_no_face_cartoon_robot.mp4"
MAX_FRAMES = 36


# ---------------------------------------------------------------------------------------------- metrics


def test_auc_equals_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        s = rng.integers(0, 6, 40) / 5.0  # many ties
        if len(set(y)) < 2:
            continue
        pos, neg = s[y == 1], s[y == 0]
        pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
        assert metrics.roc_auc(y, s) == pytest.approx(pairwise, abs=1e-12)
    assert metrics.roc_auc([1, 1], [0.2, 0.3]) is None


def test_roc_and_thresholds() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    roc = metrics.roc_curve(y, s)
    assert roc.fpr[0] == 0 and roc.tpr[0] == 0 and roc.fpr[-1] == 1 and roc.tpr[-1] == 1
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
    # trapezoid area of the ROC equals the rank AUC
    area = float(np.sum(np.diff(roc.fpr) * (roc.tpr[1:] + roc.tpr[:-1]) / 2))
    assert area == pytest.approx(metrics.roc_auc(y, s))
    t = metrics.youden_threshold(y, s)
    called = s > t
    assert called[y == 1].mean() - called[y == 0].mean() == pytest.approx(0.75)  # the best J here
    t0 = metrics.threshold_at_fpr(y, s, 0.0)
    assert (s[y == 0] > t0).mean() == 0.0 and (s[y == 1] > t0).mean() == 0.75
    sep = metrics.youden_threshold([0, 1], [0.2, 0.9])
    assert 0.2 < sep < 0.9
    ids, vy, vs = metrics.video_scores(["a", "b", "a"], [1, 0, 1], [0.2, 0.5, 0.4])
    assert ids == ["a", "b"] and vy.tolist() == [1, 0] and vs == pytest.approx([0.3, 0.5])


# ------------------------------------------------------------------------------------------ augmentation


def test_augment_applies_one_transform_to_all_frames() -> None:
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (1, 224, 224, 3), dtype=torch.uint8)
    clip = frame.repeat(32, 1, 1, 1)
    aug = ClipAugment(flip_p=1.0, scale=(0.8, 0.8))
    out = aug(clip)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    assert torch.equal(out, out[:1].expand_as(out))  # identical frames stay identical
    assert not torch.equal(out, clip)
    flip_only = ClipAugment(flip_p=1.0, scale=(1.0, 1.0), brightness=0, contrast=0, saturation=0)
    assert torch.equal(flip_only(clip), clip.flip(2))


def test_clip_selection_is_even() -> None:
    assert select_evenly(list(range(10)), 4) == [0, 3, 6, 9]
    assert select_evenly(list(range(10)), 1) == [5]
    assert select_evenly([1, 2], 5) == [1, 2]
    assert clip_stride(300, 8) == (300 - 32) // 8
    assert clip_stride(20, 8) == 32


# ------------------------------------------------------------------------------------------------ splits


def _rec(video: str, label: int, k: int = 0) -> layout.ClipRecord:
    stem = Path(video).stem
    return layout.ClipRecord(f"x/{stem}/c{k:03d}.npz", label, video, f"{stem}_0123456789", "0" * 64, 0, list(range(32)))


def test_stratified_split_keeps_videos_whole_and_is_seeded() -> None:
    recs = [_rec(f"{'fake' if i % 2 else 'real'}/v{i}.mp4", i % 2, k) for i in range(10) for k in range(3)]
    a = stratified_split(recs, 0.2, seed=1)
    b = stratified_split(recs, 0.2, seed=1)
    assert [r.file for r in a["val"]] == [r.file for r in b["val"]]
    val_videos = {r.video for r in a["val"]}
    assert {r.label for r in a["val"]} == {0, 1}
    assert not val_videos & {r.video for r in a["train"]}
    assert len(a["val"]) == 3 * len(val_videos)


def test_split_csv(tmp_path) -> None:
    recs = [_rec("real/a.mp4", 0), _rec("fake/b.mp4", 1), _rec("fake/c.mp4", 1)]
    p = tmp_path / "split.csv"
    p.write_text("filename,label,split\na.mp4,real,train\nb,1,validation\n")
    s = split_by_csv(recs, p)
    assert [r.video for r in s["train"]] == ["real/a.mp4"] and [r.video for r in s["val"]] == ["fake/b.mp4"]
    p.write_text("filename,label,split\na.mp4,1,train\n")
    from ftcn.errors import InputError

    with pytest.raises(InputError, match="disagrees"):
        split_by_csv(recs, p)


# ----------------------------------------------------------------------------------------- preprocess


@pytest.fixture(scope="session")
def video_root(tmp_path_factory, videos_dir) -> Path:
    """real/ + fake/ folder: one video each, plus a face-less video under fake/ (symlinks)."""
    src = tmp_path_factory.mktemp("videos")
    for rel in (REAL, FAKE):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).symlink_to(videos_dir / rel)
    (src / "fake" / Path(NO_FACE).name).symlink_to(videos_dir / NO_FACE)
    return src


def _preprocess(src: Path, out: Path, det: Path) -> int:
    return main(["preprocess", "-d", str(src), "-o", str(out), "--max_frames", str(MAX_FRAMES), "--max_clips", "1",
                 "--detector-weights", str(det), "--device", "cpu", "--quiet"])


@pytest.fixture(scope="session")
def clip_data(tmp_path_factory, video_root, retinaface_weights) -> Path:
    """The preprocessed tiny set: 1 clip per face video."""
    out = tmp_path_factory.mktemp("clips")
    assert _preprocess(video_root, out, retinaface_weights) == 0
    return out


@pytest.mark.slow
def test_preprocess_writes_clips_with_provenance(clip_data, videos_dir) -> None:
    recs = layout.read_index(clip_data)
    assert sorted((r.video, r.label) for r in recs) == [(FAKE, 1), (REAL, 0)]
    for r in recs:
        with np.load(clip_data / r.file) as z:
            assert z["frames"].shape == (32, 224, 224, 3) and z["frames"].dtype == np.uint8
            assert int(z["label"]) == r.label and str(z["video"]) == r.video
            assert z["frame_indices"].tolist() == r.frame_indices
            assert str(z["video_sha256"]) == r.video_sha256
            assert z["frames"].std() > 10  # a real image, not padding
        assert max(r.frame_indices) < MAX_FRAMES and len(r.frame_indices) == 32
        from ftcn.checkpoint import file_sha256

        assert r.video_sha256 == file_sha256(videos_dir / r.video)
    summary = json.loads((clip_data / layout.SUMMARY).read_text())
    assert summary["no_face"] == ["fake/" + Path(NO_FACE).name]
    assert summary["ok"] == 2 and summary["clips"] == 2
    assert not (clip_data / ".candidates").exists()  # spilled candidates are cleaned up


@pytest.mark.slow
def test_preprocess_clips_equal_the_inference_path(clip_data, videos_dir, retinaface_weights) -> None:
    """The stored clip is what ClipExtractor (analyze's path) yields for the same frames."""
    from ftcn.clip_extraction import ClipExtractor
    from ftcn.config import load_config
    from ftcn.detector import RetinaFaceDetector

    rec = next(r for r in layout.read_index(clip_data) if r.label == 0)
    cfg = load_config()
    det = RetinaFaceDetector.from_config(cfg["detector"], retinaface_weights, "cpu")
    stride = clip_stride(MAX_FRAMES, 1)
    clips = list(ClipExtractor(det, cfg, stride).run(str(videos_dir / REAL), max_frames=MAX_FRAMES))
    match = [c for c in clips if c.frame_indices == rec.frame_indices]
    assert len(match) == 1
    frames, _ = layout.load_clip(clip_data / rec.file)
    assert np.array_equal(frames, match[0].frames)


@pytest.mark.slow
def test_preprocess_resumes(clip_data, video_root, retinaface_weights, capsys) -> None:
    """Same input again: every finished video (also the face-less one) is skipped, nothing re-extracted."""
    log_before = (clip_data / layout.VIDEOS_LOG).read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in clip_data.rglob("*.npz")}
    assert _preprocess(video_root, clip_data, retinaface_weights) == 0
    summary = json.loads((clip_data / layout.SUMMARY).read_text())
    assert summary["skipped"] == 3 and summary["processed"] == 0 and summary["clips"] == 2
    assert (clip_data / layout.VIDEOS_LOG).read_text() == log_before
    assert {p: p.stat().st_mtime_ns for p in clip_data.rglob("*.npz")} == mtimes
    assert len(layout.read_index(clip_data)) == 2
    assert "no usable face in 1 videos" in capsys.readouterr().err


def test_find_videos_labels_by_nearest_folder_and_follows_symlinks(tmp_path) -> None:
    from ftcn.training.preprocess import find_videos

    data = tmp_path / "data"
    for rel in ("real/a.mp4", "set1/fake/b.MOV", "set1/fake/real/c.mp4", "misc/d.mp4", "real/notes.txt"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "e.mp4").write_bytes(b"x")
    (data / "set2").mkdir()
    (data / "set2" / "fake").symlink_to(elsewhere, target_is_directory=True)
    found, unlabelled = find_videos(data)
    assert [(v.rel, v.label) for v in found] == [
        ("real/a.mp4", 0), ("set1/fake/b.MOV", 1), ("set1/fake/real/c.mp4", 0), ("set2/fake/e.mp4", 1)]
    assert unlabelled == ["misc/d.mp4"]
    assert [(v.rel, v.label) for v in find_videos(data / "set1" / "fake")[0]] == [("b.MOV", 1), ("real/c.mp4", 0)]


def test_preprocess_rejects_unlabelled_input(tmp_path, capsys) -> None:
    (tmp_path / "misc").mkdir()
    (tmp_path / "misc" / "a.mp4").write_bytes(b"x")
    assert main(["preprocess", "-d", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert "no videos under a real/ or fake/ folder" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- train


def _split_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "label", "split"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def trained(clip_data, random_ckpt, tmp_path_factory) -> Path:
    """4 full-batch steps with a frozen backbone on the 2 clips."""
    out = tmp_path_factory.mktemp("train")
    split = _split_csv(out / "split.csv", [(Path(REAL).name, "real", "train"), (Path(FAKE).name, "fake", "train")])
    code = main(["train", "-d", str(clip_data), "-p", str(random_ckpt), "--split", str(split), "--freeze",
                 "--lr", "1e-4", "--batch-size", "2", "--epochs", "4", "--no-augment", "--num-workers", "0",
                 "--device", "cpu", "--out", str(out), "--quiet", "--seed", "0"])
    assert code == 0
    return out


def _all_tensors(path: Path) -> dict[str, torch.Tensor]:
    return dict(read_state_dict(path))


@pytest.mark.slow
def test_freeze_changes_only_the_head(trained, random_ckpt) -> None:
    before, after = _all_tensors(random_ckpt), _all_tensors(trained / "best.pth")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "training changed nothing"
    assert all(k.startswith("resnet.head.") for k in changed), sorted(changed)[:5]
    assert "resnet.head.time_T.mlp_head.1.weight" in changed
    raw = torch.load(trained / "best.pth", map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw)  # the official layout


@pytest.mark.slow
def test_full_finetune_step_trains_every_parameter_but_keeps_bn_statistics(clip_data, random_ckpt, tmp_path) -> None:
    """Without --freeze (augmentation on, default config): one step moves every parameter tensor;
    BatchNorm running statistics stay as loaded (train.freeze_bn_stats)."""
    out = tmp_path / "full"
    code = main(["train", "-d", str(clip_data), "-p", str(random_ckpt), "--lr", "1e-5", "--batch-size", "1",
                 "--max-steps", "1", "--num-workers", "0", "--device", "cpu", "--out", str(out), "--quiet"])
    assert code == 0
    before, after = _all_tensors(random_ckpt), _all_tensors(out / "last.pth")
    params = {n for n, _ in load_ftcn(random_ckpt).named_parameters()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == params
    assert any(k.startswith("resnet.s1.") for k in changed)


@pytest.mark.slow
def test_training_lowers_the_loss_on_the_memorised_set(trained, clip_data, random_ckpt) -> None:
    """BCE of the eval-mode model on the two training clips, before vs after training.

    The backbone is frozen, so its features are computed once and only the heads are compared.
    """
    ds = ClipDataset(clip_data, layout.read_index(clip_data))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([float(ds[i][1]) for i in range(len(ds))])
    m0 = load_ftcn(random_ckpt)
    m1 = load_ftcn(trained / "best.pth")
    with torch.no_grad():
        feats = m0.resnet.features(normalize_clips(x))
        l0 = F.binary_cross_entropy_with_logits(m0.resnet.head(feats)[:, 0], y)
        l1 = F.binary_cross_entropy_with_logits(m1.resnet.head(feats)[:, 0], y)
    assert float(l1) < float(l0) - 1e-3, (float(l0), float(l1))
    m = json.loads((trained / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4] and len(m["steps"]) == 4
    assert m["freeze"] and m["trainable_parameters"] == sum(
        p.numel() for n, p in m1.named_parameters() if n.startswith("resnet.head."))
    for name in ("curves.png", "metrics.csv", "last.pth", "train_state.pt", "config.yaml"):
        assert (trained / name).stat().st_size > 0, name


@pytest.mark.slow
def test_resume_continues_with_validation(trained, clip_data, tmp_path) -> None:
    """--resume picks up model, optimizer and epoch; an epoch with a validation split reports its loss."""
    out = tmp_path / "resumed"
    out.mkdir()
    for name in ("train_state.pt",):
        (out / name).write_bytes((trained / name).read_bytes())
    split = _split_csv(tmp_path / "split.csv", [(REAL, "real", "train"), (FAKE, "fake", "val")])
    code = main(["train", "-d", str(clip_data), "--resume", "--split", str(split), "--freeze", "--lr", "1e-4",
                 "--batch-size", "1", "--epochs", "5", "--no-augment", "--num-workers", "0", "--device", "cpu",
                 "--out", str(out), "--quiet"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4, 5]
    last = m["history"][-1]
    assert last["step"] == 5 and last["val_loss"] is not None and last["val_auc"] is None  # one class in val
    state = torch.load(out / "train_state.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 5 and state["optimizer"]["state"]  # Adam moments carried over


@pytest.mark.slow
def test_trained_checkpoint_runs_in_analyze(trained, videos_dir, retinaface_weights) -> None:
    from ftcn.analyze import Analyzer
    from ftcn.config import load_config

    cfg = load_config(trained / "config.yaml")
    assert cfg["model"]["id"] == "ftcn_tt_finetuned"
    load_ftcn(cfg["model"]["checkpoint"])  # strict
    analyzer = Analyzer(cfg, detector_weights=retinaface_weights, device="cpu")
    report = analyzer.analyze(videos_dir / REAL, max_frames=32, stride=32, write_video=False, write_plot=False)
    assert report["num_clips"] == 1 and 0.0 < report["df_probability"] < 1.0
    assert report["model"]["checkpoint"] == str(trained / "best.pth")


# ----------------------------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_reports_auc_roc_and_writes_threshold(trained, clip_data, tmp_path, capsys) -> None:
    cfg_path = tmp_path / "site.yaml"
    cfg_path.write_text("analyze:\n  stride: 4\nmodel:\n  thresholds:\n    other: 0.3\n")
    out = tmp_path / "eval"
    code = main(["evaluate", "-d", str(clip_data), "-p", str(trained / "best.pth"), "-c", str(cfg_path),
                 "--model-id", "mine", "--out", str(out), "--write-threshold", str(cfg_path), "--device", "cpu"])
    assert code == 0
    rep = json.loads((out / "evaluation.json").read_text())
    assert rep["videos"] == 2 and rep["clips"] == 2
    labels = [rep["video_labels"][v] for v in rep["video_scores"]]
    scores = [rep["video_scores"][v] for v in rep["video_scores"]]
    assert rep["auc"] == metrics.roc_auc(labels, scores) and rep["auc"] in (0.0, 1.0)
    assert rep["threshold"] == 0.5  # no entry for "mine" yet: default_threshold
    assert (out / "roc.png").stat().st_size > 0
    cal = rep["calibration"]["threshold"]
    assert rep["calibration"]["video_acc"] >= 0.5
    from ftcn.config import load_config, model_threshold

    written = yaml.safe_load(cfg_path.read_text())
    assert written["analyze"]["stride"] == 4 and written["model"]["thresholds"]["other"] == 0.3
    assert model_threshold(load_config(cfg_path), "mine") == pytest.approx(cal)
    assert "AUC=" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_stay_in_sync(clip_data, random_ckpt, tmp_path) -> None:
    split = _split_csv(tmp_path / "split.csv", [(REAL, "real", "train"), (FAKE, "fake", "train")])
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ftcn.cli", "train", "-d", str(clip_data), "-p", str(random_ckpt), "--split", str(split),
           "--freeze", "--lr", "1e-3", "--batch-size", "1", "--epochs", "1", "--max-steps", "1", "--no-augment",
           "--num-workers", "0", "--device", "cpu", "--out", str(out), "--quiet",
           "--checksum-file", str(tmp_path / "sum_{rank}.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s0 = json.loads((tmp_path / "sum_0.json").read_text())
    s1 = json.loads((tmp_path / "sum_1.json").read_text())
    assert (s0["rank"], s1["rank"]) == (0, 1)
    assert s0["all"] == s1["all"] and s0["head"] == s1["head"]
    from ftcn.training.train import param_checksum

    assert s0["head"] != param_checksum(load_ftcn(random_ckpt))["head"]  # the step did change the head
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["train_clips"] == 2
    assert param_checksum(load_ftcn(out / "last.pth"))["all"] == s0["all"]
