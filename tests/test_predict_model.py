"""/predict with the real Analyzer (random checkpoint fixture + real RetinaFace weights, CPU).

The service must give exactly what `Analyzer.analyze` (the `ftcn-stream analyze` path) gives
on the same video, whether the video is a local file or downloaded. Kept to a few short runs:
32 frames and stride 16, i.e. one clip per face track (~2 s of model time each on CPU).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from predict_support import Origin, post_predict, predict_client, running

from ftcn.config import load_config
from ftcn.predict_service import PredictService

MAX_FRAMES = 32
REAL_VIDEO = "real/hdtf_real_RD_Radio10_clip_2s_512.mp4"


def _cfg(**serve: Any) -> dict[str, Any]:
    return load_config(overrides={"analyze": {"stride": 16, "max_frames": MAX_FRAMES}, "serve": serve})


@pytest.fixture(scope="module")
def analyzer(random_ckpt: Path, retinaface_weights: Path):
    from ftcn.analyze import Analyzer

    return Analyzer(_cfg(), checkpoint=random_ckpt, device="cpu", detector_weights=retinaface_weights)


@pytest.fixture(scope="module")
def direct_report(analyzer, videos_dir: Path) -> dict[str, Any]:
    """What `ftcn-stream analyze` computes for the shared real video."""
    return analyzer.analyze(videos_dir / REAL_VIDEO, write_video=False, write_plot=False)


@pytest.mark.slow
def test_predict_matches_analyze_for_local_and_downloaded_video(
    analyzer, direct_report: dict[str, Any], videos_dir: Path, tmp_path: Path
) -> None:
    assert direct_report["num_clips"] >= 1 and direct_report["df_probability"] is not None
    downloads = tmp_path / "downloads"
    service = PredictService(
        _cfg(allowed_dirs=[str(videos_dir)], allowed_networks=["127.0.0.1/32"], download_dir=str(downloads)),
        analyzer,
    )

    async def go() -> tuple[dict, dict, dict]:
        async with running(Origin(videos_dir / REAL_VIDEO)) as origin, predict_client(service) as client:
            job = asyncio.create_task(post_predict(client, {"file_path": str(videos_dir / REAL_VIDEO)}))
            worst, saw_running = 0.0, False
            while not job.done():  # the event loop stays free while the real analysis runs
                t0 = time.monotonic()
                resp = await client.get("/healthcheck")
                worst = max(worst, time.monotonic() - t0)
                saw_running |= (await resp.json())["jobs"]["running"] == 1
                await asyncio.sleep(0.05)
            assert saw_running and worst < 1.0, worst
            status, local = await job
            assert status == 200, local
            status, remote = await post_predict(client, {"file_path": origin.url("/video.mp4"), "batch_size": 1})
            assert status == 200, remote
            health = await (await client.get("/healthcheck")).json()
            return local, remote, health

    local, remote, health = asyncio.run(go())
    for body in (local, remote):
        assert body["df_probability"] == pytest.approx(direct_report["df_probability"], rel=1e-5, abs=1e-7)
        assert body["prediction"] == direct_report["prediction"]
        assert body["num_clips"] == direct_report["num_clips"]
        assert body["num_frames"] == MAX_FRAMES
        assert [t["track_id"] for t in body["tracks"]] == [t["track_id"] for t in direct_report["tracks"]]
        assert body["model"]["sha256"] == analyzer.model_sha256
        assert body["start_time"] <= body["end_time"]
    assert local["source"] == {"type": "local"}
    assert remote["source"]["type"] == "url" and remote["batch_size"] == 1
    assert list(downloads.iterdir()) == []
    assert health["model"]["sha256"] == analyzer.model_sha256 and health["device"] == "cpu"
    assert health["face_detector"]["name"].startswith("retinaface")


@pytest.mark.slow
def test_predict_no_face_video(analyzer, videos_dir: Path) -> None:
    service = PredictService(_cfg(allowed_dirs=[str(videos_dir / "other")]), analyzer)

    async def go() -> tuple[int, dict]:
        async with predict_client(service) as client:
            return await post_predict(client, {"file_path": "tpsmm_no_face_cartoon_robot.mp4"})

    status, body = asyncio.run(go())
    assert status == 200, body
    assert body["prediction"] == "NO_FACE"
    assert body["df_probability"] is None
    assert body["tracks"] == [] and body["num_clips"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_command_starts_and_refuses(random_ckpt: Path, retinaface_weights: Path, tmp_path: Path) -> None:
    """`ftcn-stream serve` loads the model once, answers /healthcheck, refuses bad input with JSON."""
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"detector:\n  weights: {retinaface_weights}\nserve:\n  token: tok\n")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("FTCN_API_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftcn.cli", "serve", "--port", str(port), "--config", str(cfg),
         "--checkpoint", str(random_ckpt), "--device", "cpu", "--allow-dir", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                status, health = _http("GET", f"{base}/healthcheck")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.3)
        assert status == 200 and health["healthy"] is True and health["device"] == "cpu"
        assert len(health["model"]["sha256"]) == 64
        assert _http("POST", f"{base}/predict", {"file_path": "/etc/passwd"})[0] == 401
        status, body = _http("POST", f"{base}/predict", {"file_path": "/etc/passwd"}, token="tok")
        assert status == 403 and body["error"] == "path_not_allowed"
        status, body = _http("POST", f"{base}/predict", {"file_path": "http://169.254.169.254/"}, token="tok")
        assert status == 403 and body["error"] == "address_not_allowed"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
