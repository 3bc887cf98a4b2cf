"""Where exported ONNX files and built engines live, and the keys that name them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ftcn.checkpoint import file_sha256

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Explicit dir, else $FTCN_ENGINE_DIR, else $XDG_CACHE_HOME/ftcn-stream/engines."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("FTCN_ENGINE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ftcn-stream" / "engines"


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a weights file, memoised by (path, size, mtime) since checkpoints are 60 MB."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(p)
    return _SHA_CACHE[key]


def key_digest(fields: dict[str, Any]) -> str:
    """Short stable digest of a cache key (the full key is stored beside the artefact as JSON)."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
