"""FTCN+TT model and checkpoint loader against the official reference fixtures.

Full forwards are expensive on CPU (~2 s per clip), so one loaded model and its outputs on the
parity fixture are shared by the whole module: 3 clips in total.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from ftcn.checkpoint import file_sha256, load_ftcn, read_state_dict, save_official
from ftcn.errors import WeightsError
from ftcn.model import FTCN, NORM_MEAN, NORM_STD, normalize_clips


@pytest.fixture(scope="module")
def parity(fixtures_dir: Path) -> dict:
    return torch.load(fixtures_dir / "ftcn_parity_io.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model(random_ckpt: Path) -> FTCN:
    return load_ftcn(random_ckpt)


@pytest.fixture(scope="module")
def reference_state(random_ckpt: Path) -> OrderedDict[str, torch.Tensor]:
    return read_state_dict(random_ckpt)


@pytest.fixture(scope="module")
def outputs(model: FTCN, parity: dict) -> dict[str, torch.Tensor]:
    x = normalize_clips(parity["clips_uint8_NTHWC"])
    with torch.inference_mode():
        return {"logit2": model.forward_logit(x), "prob1": model(x[:1])}


def assert_same_state(a: OrderedDict[str, torch.Tensor], b: OrderedDict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def test_state_dict_matches_manifest(fixtures_dir: Path) -> None:
    manifest = json.loads((fixtures_dir / "ftcn_state_dict_manifest.json").read_text())
    expected = [(k.removeprefix("module."), shape, dtype) for k, shape, dtype in manifest["entries"]]
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in FTCN().state_dict().items()]
    assert got == expected
    n_params = sum(p.numel() for p in FTCN().parameters())
    assert n_params == manifest["num_parameters"]


def test_random_checkpoint_loads_strictly(model: FTCN, random_ckpt: Path) -> None:
    raw = torch.load(random_ckpt, map_location="cpu", weights_only=True)
    assert not model.training
    state = model.state_dict()
    assert len(state) == len(raw)
    for key, value in raw.items():
        mine = state[key.removeprefix("module.")]
        assert mine.dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        assert torch.equal(mine, value.to(mine.dtype)), key


def test_normalize_clips_matches_reference_formula(parity: dict) -> None:
    clips = parity["clips_uint8_NTHWC"][:1, :2]
    ref = (clips.permute(0, 4, 1, 2, 3).float() - parity["norm_mean"].view(1, 3, 1, 1, 1)) / parity[
        "norm_std"
    ].view(1, 3, 1, 1, 1)
    assert torch.equal(torch.tensor(NORM_MEAN, dtype=torch.float32), parity["norm_mean"])
    assert torch.equal(torch.tensor(NORM_STD, dtype=torch.float32), parity["norm_std"])
    out = normalize_clips(clips)
    assert out.dtype == torch.float32 and out.shape == (1, 3, 2, 224, 224)
    assert torch.equal(out, ref)
    assert torch.equal(normalize_clips(clips.numpy()), ref)


def test_parity_output_and_logit(outputs: dict[str, torch.Tensor], parity: dict) -> None:
    logit = outputs["logit2"]
    assert logit.shape == (2, 1) and logit.dtype == torch.float32
    assert (logit - parity["logit"]).abs().max().item() <= 1e-5
    assert (torch.sigmoid(logit) - parity["output"]).abs().max().item() <= 1e-5


def test_batch1_equals_batch2_and_sigmoid_inside(outputs: dict[str, torch.Tensor], parity: dict) -> None:
    prob1 = outputs["prob1"]
    assert prob1.shape == (1, 1)
    assert 0.0 < prob1.item() < 1.0
    assert (prob1[0] - torch.sigmoid(outputs["logit2"][0])).abs().item() <= 1e-6
    assert (prob1[0] - parity["output_batch1_each"][0]).abs().item() <= 1e-5


def test_wrong_input_shape_rejected(model: FTCN) -> None:
    with pytest.raises(ValueError, match="224"):
        model(torch.zeros(1, 3, 32, 112, 112))


def _save(state: dict, path: Path, zip_format: bool = True) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    return path


def test_mismatched_checkpoints_raise(reference_state: OrderedDict, tmp_path: Path) -> None:
    half = OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in reference_state.items())

    bad_shape = OrderedDict(half)
    bad_shape["resnet.s2.pathway0_res0.branch2.a.weight"] = torch.zeros(64, 64, 1, 1, 1, dtype=torch.half)
    with pytest.raises(WeightsError, match=r"wrong shape.*resnet\.s2\.pathway0_res0\.branch2\.a\.weight"):
        load_ftcn(_save(bad_shape, tmp_path / "shape.pt"))

    renamed = OrderedDict(half)
    renamed["resnet.head.time_T.extra_bias"] = renamed.pop("resnet.head.time_T.mlp_head.1.bias")
    with pytest.raises(WeightsError) as info:
        load_ftcn(_save(renamed, tmp_path / "keys.pt"))
    msg = str(info.value)
    assert "missing (1): resnet.head.time_T.mlp_head.1.bias" in msg
    assert "unexpected (1): resnet.head.time_T.extra_bias" in msg


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ftcn_tt.pth"
    with pytest.raises(WeightsError, match="weights fetch") as info:
        load_ftcn(missing)
    assert str(missing) in str(info.value)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
        load_ftcn(corrupt)

    not_a_state = _save({"epoch": torch.tensor(3), "config": {"lr": 1}}, tmp_path / "odd.pt")
    with pytest.raises(WeightsError, match="no state dict found"):
        read_state_dict(not_a_state)


def test_other_serialisations_load(reference_state: OrderedDict, tmp_path: Path) -> None:
    # zip format, no `module.` prefix, float32
    plain = _save(OrderedDict(reference_state), tmp_path / "plain_zip.pt", zip_format=True)
    assert_same_state(load_ftcn(plain).state_dict(), reference_state)
    # legacy format, prefixed, float32, wrapped like a training checkpoint
    wrapped = _save(
        {"epoch": 3, "state_dict": OrderedDict(("module." + k, v) for k, v in reference_state.items())},
        tmp_path / "wrapped_legacy.pt",
        zip_format=False,
    )
    assert_same_state(read_state_dict(wrapped), reference_state)


def test_save_official_round_trip(model: FTCN, reference_state: OrderedDict, tmp_path: Path) -> None:
    out = save_official(model, tmp_path / "sub" / "ftcn_tt.pth")
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert isinstance(raw, OrderedDict)
    assert all(k.startswith("module.resnet.") for k in raw)
    assert {v.dtype for v in raw.values()} == {torch.float32, torch.int64}
    assert_same_state(load_ftcn(out).state_dict(), reference_state)
    assert not list(out.parent.glob("*.tmp"))  # no temp file left behind
    # Legacy (non-zip) serialisation like the released file.
    assert out.read_bytes()[:2] != b"PK"


def test_file_sha256(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    p.write_bytes(data)
    assert file_sha256(p, chunk_size=1 << 16) == hashlib.sha256(data).hexdigest()
