"""Reading, strictly loading and writing FTCN+TT checkpoints in the official `ftcn_tt.pth` format.

The official file is a legacy (pre-zip) torch pickle of a plain OrderedDict whose keys carry the
DistributedDataParallel prefix `module.`. `read_state_dict` also accepts zip-format files,
un-prefixed keys, float16 copies and dicts that wrap the state dict (training checkpoints), so the
same loader serves the released file, the test fixtures and our own training output. Loading is
strict: a partial load would silently give a random classifier.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ftcn.errors import WeightsError
from ftcn.model import FTCN

PREFIX = "module."
# Keys under which training frameworks commonly nest the state dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "network", "net", "module")
_MAX_LISTED = 8


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _unwrap(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    """Return the tensor mapping itself, or the one nested under a WRAPPER_KEYS entry (one level)."""
    if _is_state_dict(obj):
        return obj  # type: ignore[return-value]
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                return obj[key]
        found = ", ".join(map(str, list(obj)[:_MAX_LISTED]))
        raise WeightsError(
            f"{path}: no state dict found (top-level keys: {found}; "
            f"expected tensors or one of {', '.join(WRAPPER_KEYS)})"
        )
    raise WeightsError(f"{path}: expected a state dict, found a {type(obj).__name__}")


def read_state_dict(path: str | os.PathLike[str]) -> OrderedDict[str, torch.Tensor]:
    """Read a checkpoint into an OrderedDict with `module.` stripped and floats as float32 (CPU).

    Accepts: legacy or zip torch serialization; keys with or without the `module.` prefix;
    float16/float32/float64 floating tensors (converted to float32); a plain state dict or a dict
    holding one under "state_dict", "model_state_dict", "model", "network", "net" or "module".
    Loads with `weights_only=True`, so no code in the file is executed.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"FTCN checkpoint not found: {p} (download it with `ftcn-stream weights fetch`)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds on junk input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{p} is not a readable torch checkpoint (corrupt or wrong file?): {first}"
        ) from exc
    state = _unwrap(obj, p)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        if name in out:
            raise WeightsError(f"{p}: key {name!r} appears both with and without the `module.` prefix")
        out[name] = value.float() if value.is_floating_point() else value
    return out


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{label} ({len(items)}): {shown}{more}"


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise WeightsError listing missing, unexpected and mis-shaped keys; return if all match."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshaped:
        parts = [
            _listing(label, items)
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
            if items
        ]
        raise WeightsError(f"{source} does not match the FTCN+TT network: " + "; ".join(parts))


def load_ftcn(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> FTCN:
    """Build FTCN+TT, load `path` strictly, move it to `device` and return it in eval mode."""
    state = read_state_dict(path)
    model = FTCN()
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def official_state_dict(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
) -> OrderedDict[str, torch.Tensor]:
    """The official layout: `module.` prefix, float32 floats, int64 counters, CPU tensors."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        name = key if key.startswith(PREFIX) else PREFIX + key
        t = value.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        elif key.endswith("num_batches_tracked"):
            t = t.long()
        out[name] = t.contiguous().clone()
    return out


def save_official(
    model_or_state: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike[str]
) -> Path:
    """Write a checkpoint in the official format, atomically (temp file in the same dir + rename).

    Uses the legacy (non-zip) serialization like the released file, so the official code and
    older torch versions read it as well.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = official_state_dict(model_or_state)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh, _use_new_zipfile_serialization=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are ~60 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()
