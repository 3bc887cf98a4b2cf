"""End-to-end live pipeline against real services: gst-rtsp-server, mosquitto, RetinaFace, FTCN (random ckpt).

One app (module scope) serves the related assertions, because each FTCN clip costs ~2 s on CPU:
low-res RTSP (192 px, 15 fps), stride 32, alert thresholds at 0 so the random checkpoint alerts.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ftcn.config import load_config
from stream.app import StreamApp
from tests.helpers.aio import LoopThread, Subscriber, stop_and_list_leftover_tasks
from tests.helpers.services import Mosquitto, RTSPServer, make_rtsp_video

pytestmark = pytest.mark.slow

SCORE_KEYS = {"stream", "track", "score", "rolling_score", "box", "first_frame", "last_frame", "first_pts",
              "last_pts", "time", "model", "latency_ms"}


@pytest.fixture(scope="module")
def env(tmp_path_factory, videos_dir: Path, retinaface_weights: Path, random_ckpt: Path) -> Any:
    tmp = tmp_path_factory.mktemp("live")
    # ~150 s of video: each RTSP client plays the file from its start, and a client reaching its end
    # reconnects, which would make the "cam1 stays live" checks depend on timing.
    video = make_rtsp_video(videos_dir / "real" / "liveportrait_real_d12_man_talking_512.mp4", tmp / "cam.mp4",
                            loops=20)
    rtsp = RTSPServer(video)
    rtsp.start()
    mosq = Mosquitto(tmp)
    mosq.start()
    cfg = load_config(overrides={
        "stream": {"device": "cpu", "stride": 32, "target_fps": 15, "stats_interval_s": 1,
                   "open_timeout_s": 3, "read_timeout_s": 3,
                   "reconnect": {"initial_s": 0.3, "max_s": 1.0},
                   "mux": {"max_batch": 8, "batch_timeout_ms": 30}},
        "aggregate": {"window": 2, "alert": {"on": 0.0, "off": 0.0, "n_on": 1}},
        "mqtt": {"url": mosq.url, "reconnect_max_s": 0.5},
        "http": {"host": "127.0.0.1", "port": 0, "token": "s3cret"},
        "serve": {"allowed_dirs": [str(videos_dir / "other")]},
    })
    lt = LoopThread()
    app = StreamApp(cfg, pipeline_kwargs={"checkpoint": random_ckpt, "detector_weights": retinaface_weights})
    sub = Subscriber("127.0.0.1", mosq.port)

    async def start() -> None:
        sub.start()
        await app.start()

    lt.run(start())
    yield {"app": app, "lt": lt, "sub": sub, "rtsp": rtsp, "mosq": mosq, "tmp": tmp}

    left = stop_and_list_leftover_tasks(lt, app.stop, sub.stop)
    lt.close()
    rtsp.stop()
    mosq.stop()
    assert left == [], f"tasks left running after shutdown: {left}"


def http(env: Any, method: str, path: str, body: dict | None = None, token: str | None = "s3cret") -> tuple[int, Any]:
    url = f"http://127.0.0.1:{env['app'].http_port}{path}"
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if r.headers.get_content_type() == "application/json" else raw.decode()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait(env: Any, pred, timeout: float, what: str, since: int = 0) -> tuple:
    return env["lt"].run(env["sub"].wait_for(pred, timeout, what, since), timeout + 5)


def test_rtsp_stream_publishes_scores_status_and_stats(env: Any) -> None:
    code, body = http(env, "POST", "/streams", {"id": "cam1", "url": env["rtsp"].url})
    assert code == 201, body
    _, status, retained = wait(env, lambda t, p: t == "ftcn/cam1/status" and p.get("state") == "live", 30, "live")
    assert status["resolution"] == [192, 192] and status["error"] is None
    topic, score, _ = wait(env, lambda t, p: t.startswith("ftcn/cam1/faces/") and t.endswith("/score"), 90, "score")
    assert SCORE_KEYS <= set(score), score
    assert 0.0 <= score["score"] <= 1.0 and score["last_frame"] - score["first_frame"] == 31
    assert topic == f"ftcn/cam1/faces/{score['track']}/score"
    _, stats, _ = wait(env, lambda t, p: t == "ftcn/cam1/stats" and p["frames_processed"] > 0, 30, "stats")
    assert {"input_fps", "processed_fps", "dropped_frames", "queue_depths", "latency_ms"} <= set(stats)
    # The retained status is what a late subscriber gets.
    async def late() -> tuple:
        s2 = Subscriber("127.0.0.1", env["mosq"].port, "ftcn/cam1/status")
        s2.start()
        try:
            return await s2.wait_for(lambda t, p: True, 10, "retained status")
        finally:
            await s2.stop()
    _, st, retained = env["lt"].run(late())
    assert retained and st["state"] == "live"


def test_http_auth_health_and_metrics(env: Any) -> None:
    code, health = http(env, "GET", "/healthcheck", token=None)
    assert code == 200 and health["healthy"] is True and health["device"] == "cpu"
    assert http(env, "GET", "/streams", token=None)[0] == 401
    assert http(env, "GET", "/streams", token="wrong")[0] == 401
    code, text = http(env, "GET", "/metrics")
    assert code == 200 and "ftcn_stream_frames_in_total" in text and "ftcn_stage_seconds_bucket" in text
    assert http(env, "POST", "/streams", {"nourl": 1})[0] == 400
    assert http(env, "POST", "/streams", {"id": "a/b", "url": "x.mp4"})[0] == 400


def test_two_streams_share_detector_batches_and_publish_under_their_ids(env: Any) -> None:
    code, _ = http(env, "POST", "/streams", {"id": "cam2", "url": env["rtsp"].url})
    assert code == 201
    wait(env, lambda t, p: t.startswith("ftcn/cam2/faces/") and t.endswith("/score"), 120, "cam2 score")
    pipeline = env["app"].pipeline
    assert pipeline.detect.multi_stream_batches > 0
    _, text = http(env, "GET", "/metrics")
    line = next(x for x in text.splitlines() if x.startswith("ftcn_detect_multistream_batches_total"))
    assert float(line.split()[-1]) > 0
    # Removing cam2 at runtime does not disturb cam1.
    assert http(env, "DELETE", "/streams/cam2")[0] == 200
    wait(env, lambda t, p: t == "ftcn/cam2/status" and p.get("state") == "ended", 20, "cam2 ended")
    assert http(env, "DELETE", "/streams/cam2")[0] == 404
    n = len(env["sub"].matching(lambda t, p: t.startswith("ftcn/cam1/faces/")))
    wait(env, lambda t, p: t.startswith("ftcn/cam1/faces/") and len(
        env["sub"].matching(lambda t2, p2: t2.startswith("ftcn/cam1/faces/"))) > n, 90, "cam1 scores continue")
    code, listing = http(env, "GET", "/streams")
    assert {s["id"]: s["state"] for s in listing["streams"]}["cam1"] == "live"


def test_rtsp_server_restart_reconnects(env: Any) -> None:
    rtsp = env["rtsp"]
    rtsp.stop()
    t0 = time.time()
    _, st, _ = wait(env, lambda t, p: t == "ftcn/cam1/status" and p.get("state") == "reconnecting", 30, "reconnecting")
    assert st["error"]
    time.sleep(max(0.0, 5.0 - (time.time() - t0)))
    rtsp.start()
    mark = len(env["sub"].messages)
    wait(env, lambda t, p: t == "ftcn/cam1/status" and p.get("state") == "live", 60, "live again", since=mark)
    wait(env, lambda t, p: t.startswith("ftcn/cam1/faces/"), 120, "scores resume", since=mark)
    assert env["app"].pipeline.running


def test_alert_published_while_broker_down_arrives_after_restart(env: Any) -> None:
    mosq = env["mosq"]
    sink = env["app"].sink
    mosq.stop()
    for _ in range(100):
        if not sink.connected:
            break
        time.sleep(0.1)
    assert not sink.connected
    # A new stream opens an alert (threshold 0) while the broker is down.
    assert http(env, "POST", "/streams", {"id": "cam3", "url": env["rtsp"].url})[0] == 201
    deadline = time.time() + 150
    while time.time() < deadline and not env["app"].pipeline.aggregator.open_alerts("cam3"):
        time.sleep(0.5)
    assert env["app"].pipeline.aggregator.open_alerts("cam3"), "no alert opened on cam3"
    mosq.start()
    _, alert, _ = wait(env, lambda t, p: t == "ftcn/cam3/alert" and p.get("event") == "open", 30, "cam3 alert")
    assert alert["active"] is True and alert["track"] in alert["open_tracks"]
    http(env, "DELETE", "/streams/cam3")


def test_bad_sources_report_errors(env: Any) -> None:
    bad = env["tmp"] / "not_a_video.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    assert http(env, "POST", "/streams", {"id": "badfile", "url": str(bad)})[0] == 201
    assert http(env, "POST", "/streams", {"id": "nocam", "url": "rtsp://127.0.0.1:9/none"})[0] == 201
    _, st, _ = wait(env, lambda t, p: t == "ftcn/badfile/status" and p.get("state") == "error", 20, "file error")
    assert st["error"]
    _, st, _ = wait(env, lambda t, p: t == "ftcn/nocam/status" and p.get("state") == "reconnecting", 20, "rtsp error")
    assert st["error"] and st["attempt"] >= 1
    # A stream that ends: a short file ends with state `ended`, the pipeline keeps running.
    short = env["tmp"] / "short.mp4"
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(env["rtsp"].video), "-frames:v", "10", "-an", str(short)],
                   check=True)
    assert http(env, "POST", "/streams", {"id": "short", "url": str(short)})[0] == 201
    _, st, _ = wait(env, lambda t, p: t == "ftcn/short/status" and p.get("state") == "ended", 30, "file ended")
    assert st["frames"] == 10
    for sid in ("badfile", "nocam", "short"):
        http(env, "DELETE", f"/streams/{sid}")
    assert env["app"].pipeline.running


def test_predict_is_served_by_the_live_server(env: Any, videos_dir: Path) -> None:
    """One HTTP server: /predict shares the pipeline's detector and model and its bearer token."""
    status, _ = http(env, "POST", "/predict", {"file_path": "x.mp4"}, token=None)
    assert status == 401
    video = videos_dir / "other" / "tpsmm_no_face_cartoon_robot.mp4"
    status, body = http(env, "POST", "/predict", {"file_path": str(video)})
    assert status == 200, body
    assert body["prediction"] == "NO_FACE" and body["df_probability"] is None
    status, body = http(env, "POST", "/predict", {"file_path": "/etc/passwd"})
    assert status in (400, 403) and body["reason"]
    status, health = http(env, "GET", "/healthcheck", token=None)
    assert status == 200 and health["healthy"] and len(health["model_sha256"]) == 64
