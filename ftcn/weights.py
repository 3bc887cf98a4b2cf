"""Weight files: registry of the official downloads, cache directory, lookup, fetch and verify.

The pipeline never falls back to random weights: a missing file is a `WeightsError` that names every
path tried and the command that fetches it (DESIGN.md section 3).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shlex
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcn import __version__
from ftcn.errors import WeightsError

log = logging.getLogger(__name__)

ENV_DIR = "FTCN_WEIGHTS_DIR"
# A mirror: when set, every file is downloaded from "$FTCN_WEIGHTS_BASE_URL/<file name>" instead of its
# official URL (air-gapped mirrors, and the tests' local server).
ENV_BASE_URL = "FTCN_WEIGHTS_BASE_URL"
FETCH_COMMAND = "ftcn-stream weights fetch"
CHUNK = 1 << 16
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class KnownBad:
    """A file that is easy to mistake for the right one, recognised by its size."""

    size: int
    sha256_prefix: str
    reason: str


@dataclass(frozen=True)
class WeightSpec:
    """What is known about one downloadable weight file; None means "not known", never "anything goes"."""

    name: str
    filename: str
    url: str
    description: str
    # Size and sha256 of the file behind `url`, where known.
    size: int | None = None
    sha256: str | None = None
    # A file checked offline to behave as expected, when the download itself is not pinned.
    reference_size: int | None = None
    reference_sha256: str | None = None
    # Number of tensors the state dict holds (loaded with torch, weights_only=True).
    tensors: int | None = None
    known_bad: tuple[KnownBad, ...] = ()
    config_key: str = ""


REGISTRY: dict[str, WeightSpec] = {
    "ftcn_tt": WeightSpec(
        name="ftcn_tt",
        filename="ftcn_tt.pth",
        url="https://github.com/yinglinzheng/FTCN/releases/download/weights/ftcn_tt.pth",
        description="FTCN+TT checkpoint",
        size=59_248_500,
        sha256=None,  # not published; size and key count are checked
        tensors=275,
        config_key="model.checkpoint",
    ),
    "retinaface": WeightSpec(
        name="retinaface",
        filename="retinaface_mobilenet0.25.pth",
        url="https://github.com/yinglinzheng/face_weights/releases/download/v1/mobilenet0.25_Final.pth",
        description="RetinaFace mobilenet0.25 weights",
        # The release asset could not be checked offline, so neither size nor sha256 is pinned.
        size=None,
        sha256=None,
        # biubug6/Pytorch_Retinaface weights (via cunjian/pytorch_face_landmark), checked to reproduce the
        # reference detections: see ../shared/fixtures/README.md.
        reference_size=1_786_259,
        reference_sha256="5f88f7957d9eaef82b49b9e0202bc56e97292e2aede2999209accd34442cc4df",
        tensors=300,
        known_bad=(
            KnownBad(
                size=1_789_735,
                sha256_prefix="ed6fa7d4",
                reason=(
                    "this is mobilenet0.25_Final.pth from biubug6/Face-Detector-1MB-with-landmark, a different "
                    "model trained with other anchor sizes; under FTCN's priors it puts boxes on eyes and "
                    "shirts. Use the biubug6/Pytorch_Retinaface weights (1,786,259 bytes, sha256 5f88f795...)"
                ),
            ),
        ),
        config_key="detector.weights",
    ),
}


# ---------------------------------------------------------------------------------------------------------
# Where the files are


def _dir_candidate(cfg: Mapping[str, Any] | None, override: str | os.PathLike | None) -> tuple[Path, str]:
    """The weights directory and a word saying where it came from (for messages)."""
    if override:
        return Path(override).expanduser(), "--weights-dir"
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser(), f"${ENV_DIR}"
    conf = ((cfg or {}).get("weights") or {}).get("dir")
    if conf:
        return Path(conf).expanduser(), "config weights.dir"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ftcn-stream" / "weights", "$XDG_CACHE_HOME"
    return Path.home() / ".cache" / "ftcn-stream" / "weights", "default cache"


def weights_dir(cfg: Mapping[str, Any] | None = None, override: str | os.PathLike | None = None) -> Path:
    """Cache directory: `--weights-dir` > $FTCN_WEIGHTS_DIR > config weights.dir > XDG cache > ~/.cache."""
    return _dir_candidate(cfg, override)[0]


def _cfg_get(cfg: Mapping[str, Any] | None, dotted: str) -> Any:
    node: Any = cfg or {}
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


@dataclass(frozen=True)
class Resolved:
    """Where one weight file is expected and why there."""

    name: str
    path: Path
    source: str

    @property
    def present(self) -> bool:
        return self.path.is_file()


def resolve(
    name: str,
    cfg: Mapping[str, Any] | None = None,
    override: str | os.PathLike | None = None,
    weights_dir_override: str | os.PathLike | None = None,
) -> Resolved:
    """Explicit path (CLI `override`, then the config key) if given, else the file in the cache dir."""
    spec = REGISTRY[name]
    if override:
        return Resolved(name, Path(override).expanduser(), "command line")
    explicit = _cfg_get(cfg, spec.config_key)
    if explicit:
        return Resolved(name, Path(explicit).expanduser(), f"config {spec.config_key}")
    d, src = _dir_candidate(cfg, weights_dir_override)
    return Resolved(name, d / spec.filename, f"weights dir from {src}")


def _fetch_hint(name: str, cfg: Mapping[str, Any] | None, weights_dir_override: Any) -> str:
    """The exact fetch command that fills the directory we looked in."""
    d, src = _dir_candidate(cfg, weights_dir_override)
    cmd = f"{FETCH_COMMAND} --only {name}"
    # The env var and the default are seen by the fetch command too; a config or CLI directory is not.
    if src in ("--weights-dir", "config weights.dir"):
        cmd += f" --weights-dir {shlex.quote(str(d))}"
    return cmd


def _require(name: str, cfg: Mapping[str, Any] | None, override: Any, weights_dir_override: Any) -> Path:
    spec = REGISTRY[name]
    r = resolve(name, cfg, override, weights_dir_override)
    if r.path.is_file():
        return r.path
    what = "is a directory" if r.path.is_dir() else "not found"
    tried = f"{r.path} ({r.source})"
    if r.source.startswith("weights dir"):
        how = f"run `{_fetch_hint(name, cfg, weights_dir_override)}` or set {spec.config_key}"
    else:
        how = f"fix the path, or unset it and run `{_fetch_hint(name, cfg, weights_dir_override)}`"
    raise WeightsError(f"{spec.description} {what}; tried: {tried}; {how}")


def resolve_checkpoint(
    cfg: Mapping[str, Any] | None, override: str | os.PathLike | None = None,
    weights_dir_override: str | os.PathLike | None = None,
) -> Path:
    """Path of the FTCN+TT checkpoint that exists, or a one-line WeightsError (never random weights)."""
    return _require("ftcn_tt", cfg, override, weights_dir_override)


def resolve_detector_weights(
    cfg: Mapping[str, Any] | None, override: str | os.PathLike | None = None,
    weights_dir_override: str | os.PathLike | None = None,
) -> Path:
    """Path of the RetinaFace weights that exist, or a one-line WeightsError."""
    return _require("retinaface", cfg, override, weights_dir_override)


# ---------------------------------------------------------------------------------------------------------
# Checking a file


@dataclass
class CheckResult:
    """Outcome of checking one file; `ok` is False for anything missing or wrong."""

    name: str
    path: Path
    present: bool = False
    size: int | None = None
    sha256: str | None = None
    tensors: int | None = None
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        return "; ".join(self.problems + self.notes) or "ok"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def count_tensors(path: Path) -> int:
    """Number of tensors in a state-dict file, loaded safely (weights_only=True, on CPU)."""
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"holds a {type(obj).__name__}, not a state dict")
    return sum(1 for v in obj.values() if isinstance(v, torch.Tensor))


def check_file(spec: WeightSpec, path: Path, load: bool = True, name: str | None = None) -> CheckResult:
    """Presence, size, sha256 (where known), known look-alikes, and (with `load`) the tensor count."""
    res = CheckResult(name or spec.name, path)
    if not path.is_file():
        res.problems.append("missing")
        return res
    res.present = True
    res.size = path.stat().st_size
    for bad in spec.known_bad:
        if res.size == bad.size:
            res.sha256 = sha256_file(path)
            same = "sha256 matches too" if res.sha256.startswith(bad.sha256_prefix) else "recognised by size"
            res.problems.append(f"wrong file ({res.size:,} bytes, {same}): {bad.reason}")
            return res
    if spec.size is not None and res.size != spec.size:
        res.problems.append(f"size {res.size:,} bytes, expected {spec.size:,}")
        return res
    res.sha256 = sha256_file(path)
    if spec.sha256 is not None:
        if res.sha256 != spec.sha256:
            res.problems.append(f"sha256 {res.sha256[:12]}..., expected {spec.sha256[:12]}...")
            return res
        res.notes.append("sha256 ok")
    elif spec.reference_sha256 is not None:
        if res.sha256 == spec.reference_sha256:
            res.notes.append("matches the checked reference file")
        else:
            res.notes.append("sha256 not pinned for this download (differs from the checked reference file)")
    else:
        res.notes.append("size ok, sha256 not published" if spec.size is not None else "sha256 not published")
    if load and spec.tensors is not None:
        try:
            res.tensors = count_tensors(path)
        except Exception as exc:  # any unpickling failure means the file is unusable
            res.problems.append(f"does not load with torch (weights_only=True): {str(exc).splitlines()[0]}")
            return res
        if res.tensors != spec.tensors:
            res.problems.append(f"{res.tensors} tensors, expected {spec.tensors}")
            return res
    res.ok = True
    return res


def _select(names: Iterable[str] | None, registry: Mapping[str, WeightSpec]) -> list[str]:
    chosen = list(names) if names else list(registry)
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise WeightsError(f"unknown weights {', '.join(unknown)}; known: {', '.join(registry)}")
    return chosen


def verify(
    dest: str | os.PathLike,
    names: Iterable[str] | None = None,
    load: bool = True,
    registry: Mapping[str, WeightSpec] | None = None,
) -> list[CheckResult]:
    """Check every (or the named) weight file in directory `dest`; never raises for a bad file."""
    reg = registry if registry is not None else REGISTRY
    return [check_file(reg[n], Path(dest) / reg[n].filename, load=load, name=n) for n in _select(names, reg)]


# ---------------------------------------------------------------------------------------------------------
# Downloading
#
# urllib from the standard library: a fetch is one sequential, blocking download, it follows the
# redirects of GitHub release assets (to objects.githubusercontent.com) and keeps the Range header on
# them, and it needs no event loop or extra dependency.


@dataclass
class FetchResult:
    name: str
    path: Path
    action: str  # "skipped", "downloaded" or "resumed"
    check: CheckResult | None = None


def source_url(spec: WeightSpec, base_url: str | None = None) -> str:
    """The official URL, or `<base_url>/<file name>` when a mirror is given (argument or env var)."""
    base = base_url or os.environ.get(ENV_BASE_URL)
    if base:
        return base.rstrip("/") + "/" + spec.filename
    return spec.url


class _ShortRead(Exception):
    pass


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, headers={"User-Agent": f"ftcn-stream/{__version__}"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)  # noqa: S310 (http/https only, see source_url)


def _download(spec: WeightSpec, url: str, part: Path, progress: bool) -> bool:
    """Fill `part` with the whole file, resuming it if it exists. Returns True when it resumed."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    if spec.size is not None and offset > spec.size:
        log.warning("%s is larger than the expected file; starting over", part)
        part.unlink()
        offset = 0
    if spec.size is not None and offset == spec.size:
        return True  # a previous run got every byte; only the checks remain
    try:
        resp = _open(url, offset)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        # Range not satisfiable: complete already if the server's total equals what we have.
        m = re.search(r"/(\d+)", exc.headers.get("Content-Range", "") or "")
        if m and int(m.group(1)) == offset:
            return True
        log.warning("server refused to resume %s; starting over", part.name)
        part.unlink()
        offset = 0
        resp = _open(url, 0)
    with resp:
        resumed = False
        total: int | None = None
        if offset and resp.status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise _ShortRead(f"bad Content-Range {resp.headers.get('Content-Range')!r} for offset {offset}")
            resumed = True
            total = int(m.group(3)) if m.group(3) != "*" else None
        else:
            if offset:
                log.info("server ignored the Range request; downloading %s from the start", spec.filename)
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        total = total if total is not None else spec.size
        mode = "ab" if resumed else "wb"
        show = progress and sys.stderr.isatty()
        with open(part, mode) as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=spec.filename, disable=not show, leave=False,
        ) as bar:
            written = offset
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        if total is not None and written < total:
            raise _ShortRead(f"connection closed after {written:,} of {total:,} bytes")
        return resumed


def _fetch_one(name: str, spec: WeightSpec, dest: Path, force: bool, progress: bool,
               base_url: str | None) -> FetchResult:
    final = dest / spec.filename
    part = final.with_name(final.name + ".part")
    if final.exists() and not force:
        check = check_file(spec, final, name=name)
        if check.ok:
            return FetchResult(name, final, "skipped", check)
        log.warning("%s exists but is not valid (%s); downloading it again", final, check.message)
    if force and part.exists():
        part.unlink()
    url = source_url(spec, base_url)
    dest.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        try:
            resumed = _download(spec, url, part, progress)
        except urllib.error.HTTPError as exc:
            raise WeightsError(f"download of {name} from {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, _ShortRead) as exc:
            reason = getattr(exc, "reason", None) or exc
            kept = f"; {part.stat().st_size:,} bytes kept in {part}, run `{FETCH_COMMAND}` again to resume" \
                if part.exists() and part.stat().st_size else ""
            raise WeightsError(f"download of {name} from {url} failed: {reason}{kept}") from None
        check = check_file(spec, part, name=name)
        if check.ok:
            os.replace(part, final)  # atomic: readers see the old file or the whole new one
            check.path = final
            return FetchResult(name, final, "resumed" if resumed else "downloaded", check)
        part.unlink(missing_ok=True)
        if resumed and attempt == 1:
            log.warning("resumed download of %s is bad (%s); downloading it again from the start",
                        name, check.message)
            continue
        raise WeightsError(f"downloaded {name} from {url} is bad and was deleted: {check.message}")
    raise AssertionError("unreachable")


def fetch(
    names: Iterable[str] | None,
    dest: str | os.PathLike,
    force: bool = False,
    progress: bool = True,
    base_url: str | None = None,
    registry: Mapping[str, WeightSpec] | None = None,
) -> list[FetchResult]:
    """Download (or resume) the named weights (all when None) into `dest`, each checked then renamed
    into place. Valid files already present are skipped unless `force`. Raises one WeightsError that
    lists every failure after trying all names.
    """
    reg = registry if registry is not None else REGISTRY
    dest = Path(dest).expanduser()
    results: list[FetchResult] = []
    errors: list[str] = []
    for name in _select(names, reg):
        try:
            results.append(_fetch_one(name, reg[name], dest, force, progress, base_url))
        except WeightsError as exc:
            errors.append(str(exc))
    if errors:
        raise WeightsError(" | ".join(errors))
    return results
