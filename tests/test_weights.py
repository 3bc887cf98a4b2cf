"""Weights: cache dir precedence, lookup errors, fetch (resume, redirects, checks) and verify.

No internet: a local HTTP server on 127.0.0.1 serves the files, with Range support, a redirect, a
route that ignores Range and a route that drops the connection half way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ftcn import weights as w
from ftcn.cli import main as cli_main
from ftcn.errors import WeightsError

RF = w.REGISTRY["retinaface"]


class _State:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        st = self.state
        rng = self.headers.get("Range")
        st.requests.append((self.path, rng))
        m = re.fullmatch(r"/(files|redirect|ignore|cut)/([^/]+)", self.path)
        if not m or m.group(2) not in st.files:
            self.send_error(404)
            return
        route, name = m.groups()
        data = st.files[name]
        if route == "redirect":
            self.send_response(302)
            self.send_header("Location", f"/files/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route == "cut":  # promise everything, send half, hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        start = 0
        rm = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if rm and route == "files":
            start = int(rm.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[str, _State]]:
    state = _State()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(_server: tuple[str, _State], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, _State]]:
    url, state = _server
    state.files.clear()
    state.requests.clear()
    monkeypatch.delenv(w.ENV_BASE_URL, raising=False)
    yield url, state


@pytest.fixture
def rf_bytes(retinaface_weights: Path, tmp_path: Path) -> bytes:
    copy = tmp_path / "served_retinaface.pth"
    shutil.copyfile(retinaface_weights, copy)
    return copy.read_bytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _fake_registry(data: bytes, sha256: str | None = None) -> dict[str, w.WeightSpec]:
    """A small file with pinned size and sha256 (no torch load), for byte-level download tests."""
    spec = w.WeightSpec(name="fake", filename="fake.bin", url="http://invalid.invalid/fake.bin",
                        description="fake test file", size=len(data), sha256=sha256 or _sha(data))
    return {"fake": spec}


# ------------------------------------------------------------------ fetch


def test_fetch_follows_redirect_and_verifies(server, rf_bytes: bytes, tmp_path: Path) -> None:
    url, st = server
    st.files[RF.filename] = rf_bytes
    dest = tmp_path / "cache"
    [res] = w.fetch(["retinaface"], dest, progress=False, base_url=f"{url}/redirect")
    assert res.action == "downloaded"
    final = dest / RF.filename
    assert _sha(final.read_bytes()) == RF.reference_sha256
    assert not (dest / (RF.filename + ".part")).exists()
    assert res.check is not None and res.check.ok and res.check.tensors == 300
    assert [p for p, _ in st.requests] == [f"/redirect/{RF.filename}", f"/files/{RF.filename}"]

    # Already present and valid: nothing is requested again.
    st.requests.clear()
    [again] = w.fetch(["retinaface"], dest, progress=False, base_url=f"{url}/redirect")
    assert again.action == "skipped" and st.requests == []
    # --force downloads again.
    [forced] = w.fetch(["retinaface"], dest, force=True, progress=False, base_url=f"{url}/files")
    assert forced.action == "downloaded" and len(st.requests) == 1


def test_fetch_resumes_partial_file_with_range(server, rf_bytes: bytes, tmp_path: Path) -> None:
    url, st = server
    st.files[RF.filename] = rf_bytes
    dest = tmp_path / "cache"
    dest.mkdir()
    cut = 700_001
    (dest / (RF.filename + ".part")).write_bytes(rf_bytes[:cut])
    # Through the redirect: urllib must keep the Range header on the redirected request.
    [res] = w.fetch(["retinaface"], dest, progress=False, base_url=f"{url}/redirect")
    assert res.action == "resumed"
    assert st.requests[-1] == (f"/files/{RF.filename}", f"bytes={cut}-")
    assert (dest / RF.filename).read_bytes() == rf_bytes


def test_fetch_restarts_when_server_ignores_range(server, tmp_path: Path) -> None:
    url, st = server
    data = bytes(range(256)) * 1000
    st.files["fake.bin"] = data
    dest = tmp_path / "cache"
    dest.mkdir()
    # Wrong bytes in the partial file: appending to them would give a wrong size and hash.
    (dest / "fake.bin.part").write_bytes(b"\xff" * 5000)
    [res] = w.fetch(["fake"], dest, progress=False, base_url=f"{url}/ignore", registry=_fake_registry(data))
    assert st.requests == [("/ignore/fake.bin", "bytes=5000-")]
    assert res.action == "downloaded"
    assert (dest / "fake.bin").read_bytes() == data


def test_interrupted_download_keeps_part_and_resumes(server, tmp_path: Path) -> None:
    url, st = server
    data = bytes(range(251)) * 2000
    st.files["fake.bin"] = data
    dest = tmp_path / "cache"
    reg = _fake_registry(data)
    with pytest.raises(WeightsError, match=r"kept in .*fake\.bin\.part.*again to resume"):
        w.fetch(["fake"], dest, progress=False, base_url=f"{url}/cut", registry=reg)
    assert not (dest / "fake.bin").exists()
    assert (dest / "fake.bin.part").stat().st_size == len(data) // 2
    [res] = w.fetch(["fake"], dest, progress=False, base_url=f"{url}/files", registry=reg)
    assert res.action == "resumed"
    assert st.requests[-1] == ("/files/fake.bin", f"bytes={len(data) // 2}-")
    assert (dest / "fake.bin").read_bytes() == data


def test_complete_part_with_unknown_size_is_finished_via_416(server, tmp_path: Path) -> None:
    url, st = server
    data = b"0123456789" * 100
    st.files["fake.bin"] = data
    reg = {"fake": dataclasses.replace(_fake_registry(data)["fake"], size=None)}
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "fake.bin.part").write_bytes(data)
    [res] = w.fetch(["fake"], dest, progress=False, base_url=f"{url}/files", registry=reg)
    assert res.action == "resumed" and (dest / "fake.bin").read_bytes() == data


def test_sha256_mismatch_leaves_no_file(server, tmp_path: Path) -> None:
    url, st = server
    data = b"not the weights you are looking for" * 100
    st.files["fake.bin"] = data
    dest = tmp_path / "cache"
    reg = _fake_registry(data, sha256="0" * 64)
    with pytest.raises(WeightsError, match=r"bad and was deleted: sha256 .*expected 000000000000"):
        w.fetch(["fake"], dest, progress=False, base_url=f"{url}/files", registry=reg)
    assert list(dest.iterdir()) == []


def test_bad_resumed_part_is_downloaded_again(server, tmp_path: Path) -> None:
    url, st = server
    data = bytes(range(256)) * 400
    st.files["fake.bin"] = data
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "fake.bin.part").write_bytes(b"\x00" * 1000)  # right length prefix, wrong content
    [res] = w.fetch(["fake"], dest, progress=False, base_url=f"{url}/files", registry=_fake_registry(data))
    assert [r for _, r in st.requests] == ["bytes=1000-", None]
    assert res.action == "downloaded" and (dest / "fake.bin").read_bytes() == data


def test_fetch_rejects_lookalike_retinaface(server, rf_bytes: bytes, tmp_path: Path) -> None:
    url, st = server
    bad = RF.known_bad[0]
    st.files[RF.filename] = rf_bytes + b"\0" * (bad.size - len(rf_bytes))
    dest = tmp_path / "cache"
    with pytest.raises(WeightsError, match="Face-Detector-1MB-with-landmark"):
        w.fetch(["retinaface"], dest, progress=False, base_url=f"{url}/files")
    assert list(dest.iterdir()) == []


def test_fetch_uses_env_base_url(server, rf_bytes: bytes, tmp_path: Path, monkeypatch) -> None:
    url, st = server
    st.files[RF.filename] = rf_bytes
    monkeypatch.setenv(w.ENV_BASE_URL, f"{url}/files/")
    assert w.source_url(RF) == f"{url}/files/{RF.filename}"
    w.fetch(["retinaface"], tmp_path, progress=False)
    assert st.requests == [(f"/files/{RF.filename}", None)]
    monkeypatch.delenv(w.ENV_BASE_URL)
    assert w.source_url(RF) == RF.url


def test_network_errors_are_weights_errors(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(WeightsError, match=r"download of retinaface from .* failed: HTTP 404"):
        w.fetch(["retinaface"], tmp_path, progress=False, base_url=f"{url}/files")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightsError, match=r"download of retinaface from http://127\.0\.0\.1:\d+/.* failed"):
        w.fetch(["retinaface"], tmp_path, progress=False, base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsError, match="unknown weights nope"):
        w.fetch(["nope"], tmp_path, progress=False)


# ------------------------------------------------------------------ lookup


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(w.ENV_DIR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_weights_dir_precedence(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = clean_env
    cfg = {"weights": {"dir": str(t / "from_cfg")}}
    monkeypatch.setenv(w.ENV_DIR, str(t / "from_env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(t / "xdg"))
    assert w.weights_dir(cfg, t / "from_flag") == t / "from_flag"
    assert w.weights_dir(cfg) == t / "from_env"
    monkeypatch.delenv(w.ENV_DIR)
    assert w.weights_dir(cfg) == t / "from_cfg"
    assert w.weights_dir({"weights": {"dir": None}}) == t / "xdg" / "ftcn-stream" / "weights"
    assert w.weights_dir() == t / "xdg" / "ftcn-stream" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert w.weights_dir() == t / "home" / ".cache" / "ftcn-stream" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert w.weights_dir() == t / "home" / ".cache" / "ftcn-stream" / "weights"
    assert w.weights_dir({"weights": {"dir": "~/w"}}) == t / "home" / "w"


def test_missing_checkpoint_message(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = clean_env
    monkeypatch.setenv(w.ENV_DIR, str(t / "cache"))
    cfg = {"weights": {"dir": None}, "model": {"checkpoint": None}}
    with pytest.raises(WeightsError) as ei:
        w.resolve_checkpoint(cfg)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(t / "cache" / "ftcn_tt.pth") in msg and "$FTCN_WEIGHTS_DIR" in msg
    assert "`ftcn-stream weights fetch --only ftcn_tt`" in msg

    # A config directory is not seen by a bare fetch: the hint names it.
    monkeypatch.delenv(w.ENV_DIR)
    cfg["weights"]["dir"] = str(t / "cfgdir")
    with pytest.raises(WeightsError, match=re.escape(f"--weights-dir {t / 'cfgdir'}`")):
        w.resolve_detector_weights(cfg)

    # An explicit path is used as given, never replaced by another file.
    cfg["model"]["checkpoint"] = str(t / "mine.pth")
    (t / "cfgdir").mkdir()
    (t / "cfgdir" / "ftcn_tt.pth").write_bytes(b"x")
    with pytest.raises(WeightsError, match=re.escape(f"tried: {t / 'mine.pth'} (config model.checkpoint)")):
        w.resolve_checkpoint(cfg)
    assert w.resolve_checkpoint(cfg, override=t / "cfgdir" / "ftcn_tt.pth") == t / "cfgdir" / "ftcn_tt.pth"
    cfg["model"]["checkpoint"] = None
    assert w.resolve_checkpoint(cfg) == t / "cfgdir" / "ftcn_tt.pth"


def test_resolve_detector_from_config(retinaface_weights: Path) -> None:
    cfg = {"detector": {"weights": str(retinaface_weights)}}
    assert w.resolve_detector_weights(cfg) == retinaface_weights


# ------------------------------------------------------------------ verify


def test_verify_real_retinaface_and_bad_files(retinaface_weights: Path, tmp_path: Path) -> None:
    shutil.copyfile(retinaface_weights, tmp_path / RF.filename)
    (tmp_path / "ftcn_tt.pth").write_bytes(b"\0" * 1000)  # wrong size
    res = {r.name: r for r in w.verify(tmp_path)}
    assert res["retinaface"].ok and res["retinaface"].tensors == 300
    assert "matches the checked reference file" in res["retinaface"].message
    assert not res["ftcn_tt"].ok and "size 1,000 bytes, expected 59,248,500" in res["ftcn_tt"].message

    # The same-named file from Face-Detector-1MB-with-landmark is recognised by its size.
    with open(tmp_path / RF.filename, "ab") as f:
        f.write(b"\0" * (RF.known_bad[0].size - RF.reference_size))
    [r] = w.verify(tmp_path, ["retinaface"])
    assert not r.ok and "different model" in r.message and "1,789,735" in r.message

    # Unknown content of plausible size: must load with torch to pass.
    (tmp_path / RF.filename).write_bytes(b"garbage" * 1000)
    [r] = w.verify(tmp_path, ["retinaface"])
    assert not r.ok and "does not load with torch" in r.message

    (tmp_path / RF.filename).unlink()
    [r] = w.verify(tmp_path, ["retinaface"])
    assert not r.ok and not r.present and r.message == "missing"


def test_ftcn_layout_tensor_count(random_ckpt: Path, tmp_path: Path) -> None:
    """The FTCN check loads the legacy pickle and counts 275 tensors (size relaxed for the fp16 fixture)."""
    spec = dataclasses.replace(w.REGISTRY["ftcn_tt"], size=random_ckpt.stat().st_size)
    r = w.check_file(spec, random_ckpt)
    assert r.ok and r.tensors == 275
    r = w.check_file(dataclasses.replace(spec, tensors=276), random_ckpt)
    assert not r.ok and "275 tensors, expected 276" in r.message


def test_gpu_saved_legacy_checkpoint_loads_on_cpu(tmp_path: Path) -> None:
    """The official file is a legacy pickle with CUDA location tags; verify must load it without a GPU."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"a": torch.ones(3), "b": torch.zeros(1, dtype=torch.int64)}, buf,
               _use_new_zipfile_serialization=False)
    tag_cpu, tag_gpu = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    assert buf.getvalue().count(tag_cpu) == 1
    (tmp_path / "gpu.pth").write_bytes(buf.getvalue().replace(tag_cpu, tag_gpu))
    assert w.count_tensors(tmp_path / "gpu.pth") == 2


# ------------------------------------------------------------------ CLI


@pytest.mark.parametrize("args", [["weights"], ["weights", "fetch"], ["weights", "verify"], ["weights", "path"]])
def test_cli_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        cli_main([*args, "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ftcn-stream " + " ".join(args))
    if len(args) == 2:
        assert "--weights-dir" in out and "--only" in out and "--quiet" in out


def test_cli_fetch_verify_path(server, rf_bytes: bytes, tmp_path: Path, clean_env: Path,
                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url, st = server
    st.files[RF.filename] = rf_bytes
    d = str(tmp_path / "wd")
    assert cli_main(["weights", "verify", "--weights-dir", d]) == 1
    out = capsys.readouterr()
    assert "BAD" in out.out and "missing" in out.out and "weights fetch" in out.err

    assert cli_main(["weights", "path", "--weights-dir", d]) == 0
    out = capsys.readouterr().out
    assert f"retinaface  missing  {d}/{RF.filename}  (weights dir from --weights-dir)" in out

    monkeypatch.setenv(w.ENV_BASE_URL, f"{url}/redirect")
    assert cli_main(["weights", "fetch", "--weights-dir", d, "--only", "retinaface", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert cli_main(["weights", "verify", "--weights-dir", d, "--only", "retinaface"]) == 0
    assert "retinaface  ok" in capsys.readouterr().out
    assert cli_main(["weights", "path", "--weights-dir", d, "--only", "retinaface", "--quiet"]) == 0
    assert capsys.readouterr().out == f"{d}/{RF.filename}\n"

    # Fetch failures are one-line errors with exit code 2, not tracebacks.
    monkeypatch.setenv(w.ENV_BASE_URL, f"{url}/files")
    assert cli_main(["weights", "fetch", "--weights-dir", d, "--only", "ftcn_tt", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftcn-stream: error: download of ftcn_tt") and "HTTP 404" in err
    assert err.count("\n") == 1
