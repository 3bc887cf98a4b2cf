"""WHIP ingest end to end: real aiortc peers on loopback, RetinaFace, FTCN (random ckpt), mosquitto.

One analyzer (module scope) serves every test: each FTCN clip costs ~2 s on CPU, so the
call is downscaled to 320 px, resampled to 15 fps and classified every 32 frames.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ftcn.config import load_config
from stream.app import StreamApp
from stream.webrtc.client import WhipClient, WhipError
from tests.helpers.aio import LoopThread, Subscriber, stop_and_list_leftover_tasks
from tests.helpers.services import Mosquitto

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOKEN = "whip-s3cret"
# Generous: on 2 busy cores (FTCN forward + detector + aiortc decoding) media can pause for seconds.
MEDIA_TIMEOUT = 6.0


@pytest.fixture(scope="module")
def env(tmp_path_factory, videos_dir: Path, retinaface_weights: Path, random_ckpt: Path) -> Any:
    tmp = tmp_path_factory.mktemp("whip")
    video = videos_dir / "real" / "deepfacelive_real_twitch1_streamer.mp4"
    mosq = Mosquitto(tmp)
    mosq.start()
    cfg = load_config(overrides={
        "stream": {"device": "cpu", "stride": 32, "target_fps": 15, "stats_interval_s": 1,
                   "mux": {"max_batch": 8, "batch_timeout_ms": 30}},
        "mqtt": {"url": mosq.url, "reconnect_max_s": 0.5},
        "http": {"host": "127.0.0.1", "port": 0, "predict": False},
        "webrtc": {"token": TOKEN, "media_timeout_s": MEDIA_TIMEOUT, "connect_timeout_s": 10},
    })
    lt = LoopThread()
    app = StreamApp(cfg, pipeline_kwargs={"checkpoint": random_ckpt, "detector_weights": retinaface_weights})
    sub = Subscriber("127.0.0.1", mosq.port)

    async def start() -> None:
        sub.start()
        await app.start()

    lt.run(start())
    base = f"http://127.0.0.1:{app.http_port}"
    yield {"app": app, "lt": lt, "sub": sub, "video": video, "base": base, "tmp": tmp}

    left = stop_and_list_leftover_tasks(lt, app.stop, sub.stop)
    lt.close()
    mosq.stop()
    assert left == [], f"tasks left running after shutdown: {left}"


def wait(env: Any, pred, timeout: float, what: str, since: int = 0) -> tuple:
    return env["lt"].run(env["sub"].wait_for(pred, timeout, what, since), timeout + 5)


def call(env: Any, sid: str, **kw: Any) -> WhipClient:
    client = WhipClient(f"{env['base']}/whip/{sid}", str(env["video"]), token=TOKEN, width=320, loop=True, **kw)
    env["lt"].run(client.start(), 60)
    return client


def request(env: Any, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple:
    req = urllib.request.Request(env["base"] + path, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_whip_call_publishes_scores_and_delete_ends_it(env: Any) -> None:
    client = call(env, "call1", codec="H264")
    assert client.location and client.location.startswith(f"{env['base']}/whip/call1/")
    assert "a=recvonly" in client.answer and "H264" in client.answer
    _, st, _ = wait(env, lambda t, p: t == "ftcn/call1/status" and p.get("state") == "live", 30, "live")
    assert st["source"].startswith("whip://") and st["resolution"][0] == 320
    topic, score, _ = wait(env, lambda t, p: t.startswith("ftcn/call1/faces/") and t.endswith("/score"), 120, "score")
    assert topic == f"ftcn/call1/faces/{score['track']}/score"
    assert 0.0 <= score["score"] <= 1.0 and score["last_frame"] - score["first_frame"] == 31
    # The call goes through the same resampling as any live source: 30 fps in, ~15 fps kept.
    h = env["app"].pipeline.streams["call1"]
    session = next(s for s in env["app"].app[_whip_sessions()].values() if s.stream_id == "call1")
    assert session.frames > 1.5 * h.source.frames_out > 0, (session.frames, h.source.frames_out)
    mark = len(env["sub"].messages)
    assert env["lt"].run(client.stop()) == 200
    _, st, _ = wait(env, lambda t, p: t == "ftcn/call1/status" and p.get("state") == "ended", 20, "ended", mark)
    assert st["error"] is None
    assert "call1" not in env["app"].pipeline.streams
    # The session resource is gone.
    assert request(env, "DELETE", client.location[len(env["base"]):],
                   headers={"Authorization": f"Bearer {TOKEN}"})[0] == 404


def test_two_concurrent_calls_are_independent(env: Any) -> None:
    a = call(env, "callA", codec="VP8")
    b = call(env, "callB")
    assert "VP8" in a.answer
    for sid in ("callA", "callB"):
        wait(env, lambda t, p, s=sid: t.startswith(f"ftcn/{s}/faces/") and t.endswith("/score"), 150, f"{sid} score")
    # A second offer for a stream that is already live is refused.
    with pytest.raises(WhipError) as exc:
        call(env, "callA")
    assert exc.value.status == 409
    mark = len(env["sub"].messages)
    env["lt"].run(b.stop())
    wait(env, lambda t, p: t == "ftcn/callB/status" and p.get("state") == "ended", 20, "callB ended", mark)
    assert env["app"].pipeline.streams["callA"].status.state == "live"
    n = env["app"].pipeline.streams["callA"].source.frames_out
    time.sleep(1.5)
    assert env["app"].pipeline.streams["callA"].source.frames_out > n, "callA stopped receiving when callB hung up"
    env["lt"].run(a.stop())


def test_bad_requests(env: Any) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}
    code, _, body = request(env, "POST", "/whip/bad", b"this is not sdp", auth)
    assert code == 400 and "malformed" in body
    code, _, _ = request(env, "POST", "/whip/bad", b"v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nm=video 9 X 96\r\n", auth)
    assert code == 400
    code, headers, _ = request(env, "POST", "/whip/bad", b"v=0\r\n", {"Content-Type": "application/sdp"})
    assert code == 401 and headers.get("WWW-Authenticate") == "Bearer"
    code, _, _ = request(env, "POST", "/whip/bad", b"{}", {**auth, "Content-Type": "application/json"})
    assert code == 415
    code, _, _ = request(env, "POST", "/whip/a+b", b"v=0\r\n", auth)
    assert code == 400
    code, headers, _ = request(env, "OPTIONS", "/whip/x")
    assert code == 204 and "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Accept-Post"] == "application/sdp" and "Location" in headers["Access-Control-Expose-Headers"]
    assert request(env, "PATCH", "/whip/x/nosuch", b"", auth)[0] == 405
    assert request(env, "DELETE", "/whip/x/nosuch", None, auth)[0] == 404
    assert "bad" not in env["app"].pipeline.streams
    with pytest.raises(WhipError) as exc:  # the real client without a token
        env["lt"].run(WhipClient(f"{env['base']}/whip/notoken", str(env["video"]), width=320).start(), 60)
    assert exc.value.status == 401


def test_vanished_publisher_is_cleaned_up(env: Any) -> None:
    """`ftcn-stream publish` killed with SIGKILL (no DELETE, no DTLS close): the stream ends after the timeout."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftcn.cli", "publish", str(env["video"]), "--whip", f"{env['base']}/whip/gone",
         "--token", TOKEN, "--width", "320", "--loop"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        _, st, _ = wait(env, lambda t, p: t == "ftcn/gone/status" and p.get("state") == "live", 60, "live")
        mark = len(env["sub"].messages)
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        _, st, _ = wait(env, lambda t, p: t == "ftcn/gone/status" and p.get("state") == "ended", MEDIA_TIMEOUT + 10,
                        "ended after the peer vanished", mark)
        took = time.monotonic() - t0
    finally:
        proc.kill()
        out = proc.communicate()[0]
    assert "peer gone" in (st["error"] or "") or "peer connection" in (st["error"] or ""), (st, out)
    assert took <= MEDIA_TIMEOUT + 5, took
    # Removal completes once the stream's end has drained through the stages (a clip in flight on
    # CPU takes seconds), bounded by stream.stop_timeout_s.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        "gone" in env["app"].pipeline.streams
        or any(s.stream_id == "gone" for s in env["app"].app[_whip_sessions()].values())
    ):
        time.sleep(0.2)
    assert "gone" not in env["app"].pipeline.streams
    assert not any(s.stream_id == "gone" for s in env["app"].app[_whip_sessions()].values())


def _whip_sessions() -> Any:
    from stream.webrtc.whip import WHIP_SESSIONS

    return WHIP_SESSIONS
