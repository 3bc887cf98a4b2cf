"""The browser viewer in headless Chromium (Debian) driven by Playwright, against a real analyzer.

Two analyzers, one after the other (module fixture with two params):
- `webrtc`: a WHIP call (aiortc, the shared face video at 320 px) is analyzed and watched
  over WHEP in Chromium; boxes are matched to the shown frame through its RTP timestamp.
- `mjpeg`: WebRTC disabled in config; an RTSP camera (gst-rtsp-server) watched over MJPEG,
  then the camera stops and the page must say `reconnecting`.
Alert thresholds are 0 so the random checkpoint opens an alert (banner).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ftcn.config import load_config
from stream.app import StreamApp
from stream.webrtc.client import WhipClient
from tests.helpers.aio import LoopThread, stop_and_list_leftover_tasks
from tests.helpers.services import RTSPServer, make_rtsp_video

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def browser() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module", params=["webrtc", "mjpeg"])
def env(request, tmp_path_factory, videos_dir: Path, retinaface_weights: Path, random_ckpt: Path) -> Any:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"viewer_{mode}")
    cfg = load_config(overrides={
        "stream": {"device": "cpu", "stride": 32, "target_fps": 15, "open_timeout_s": 3, "read_timeout_s": 2,
                   "reconnect": {"initial_s": 0.5, "max_s": 2.0}, "mux": {"max_batch": 4, "batch_timeout_ms": 20}},
        "aggregate": {"window": 2, "alert": {"on": 0.0, "off": 0.0, "n_on": 1}},
        "mqtt": {"enabled": False},
        # The MJPEG run also checks the browser token path (page open, API and WebSocket via ?access_token=).
        "http": {"host": "127.0.0.1", "port": 0, "predict": False, "token": "v13wer" if mode == "mjpeg" else None},
        "webrtc": {"enabled": mode == "webrtc"},
    })
    lt = LoopThread()
    app = StreamApp(cfg, pipeline_kwargs={"checkpoint": random_ckpt, "detector_weights": retinaface_weights})
    lt.run(app.start())
    base = f"http://127.0.0.1:{app.http_port}"
    rtsp = client = None
    if mode == "webrtc":
        client = WhipClient(f"{base}/whip/cam", str(videos_dir / "real" / "deepfacelive_real_twitch1_streamer.mp4"),
                            width=320, loop=True)
        lt.run(client.start(), 60)
    else:
        video = make_rtsp_video(videos_dir / "real" / "liveportrait_real_d12_man_talking_512.mp4", tmp / "cam.mp4",
                                size=256, loops=4)
        rtsp = RTSPServer(video)
        rtsp.start()

        async def add() -> None:
            app.pipeline.add_stream("cam", rtsp.url)

        lt.run(add())
    token = cfg["http"]["token"]
    yield {"mode": mode, "app": app, "lt": lt, "base": base, "tmp": tmp, "rtsp": rtsp, "token": token}
    if client is not None:
        lt.run(client.stop(), 30)

    left = stop_and_list_leftover_tasks(lt, app.stop)
    lt.close()
    if rtsp is not None:
        rtsp.stop()
    assert left == [], f"tasks left running after shutdown: {left}"


@pytest.fixture(scope="module")
def page(env: Any, browser: Any) -> Any:
    ctx = browser.new_context(viewport={"width": 900, "height": 600})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{env['base']}/viewer" + (f"?token={env['token']}" if env["token"] else ""))
    # Pick the stream like a user.
    pg.wait_for_selector("#picker option[value=cam]", state="attached", timeout=30000)
    pg.select_option("#picker", "cam")
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    ctx.close()


def state(page: Any) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.ftcnViewer))")


def test_video_plays_with_face_boxes_and_score_labels(env: Any, page: Any) -> None:
    mode = env["mode"]
    page.wait_for_function(f"() => window.ftcnViewer.mode === '{mode}'", timeout=30000)
    if mode == "webrtc":
        t0 = page.wait_for_function("() => { const v = document.getElementById('video');"
                                    " return v.currentTime > 0 && !v.paused && v.currentTime; }",
                                    timeout=30000).json_value()
        time.sleep(1.5)
        assert page.evaluate("document.getElementById('video').currentTime") > t0, "video is not advancing"
        assert page.evaluate("document.getElementById('video').videoWidth") == 320
    else:
        page.wait_for_function("() => window.ftcnViewer.framesShown > 5", timeout=30000)
        n = state(page)["framesShown"]
        time.sleep(1.5)
        assert state(page)["framesShown"] > n, "MJPEG frames are not advancing"
    # A face box with a score label, drawn for the frame on screen (matched by PTS), once a clip was scored.
    # The box and the overlay pixels are read in one page task while the canvas still shows that draw
    # (a later video frame without matched boxes clears the canvas).
    snap = page.wait_for_function("""() => {
        const v = window.ftcnViewer, d = v.lastDraw;
        if (!d || !d.boxes.length || d.boxes[0].score == null || v.onCanvas !== d.frame) return null;
        const b = d.boxes[0], c = document.getElementById('overlay').getContext('2d');
        const edge = c.getImageData(Math.round(b.x + b.w / 2), Math.round(b.y), 1, 1).data;
        const mid = c.getImageData(Math.round(b.x + b.w / 2), Math.round(b.y + b.h / 2), 1, 1).data;
        return {state: JSON.parse(JSON.stringify(v)), px: [Array.from(edge), Array.from(mid)]}; }""",
                                  timeout=120000).json_value()
    s = snap["state"]
    box = s["lastDraw"]["boxes"][0]
    assert box["w"] > 20 and box["h"] > 20 and box["label"].startswith(f"#{box['track']} ")
    assert s["matched"] > 0 and s["matched"] >= s["unmatched"], s
    assert abs(s["lastDraw"]["pts"] - s["shownPts"]) <= 0.002 or s["shownPts"] is not None
    # Pixels: the box outline is painted on the overlay canvas in its colour, inside stays see-through.
    px = snap["px"]
    edge, mid = px
    assert edge[3] > 200, f"no box outline at the top edge: {edge}"
    want = {"#ea4335": [234, 67, 53], "#fbbc04": [251, 188, 4], "#34a853": [52, 168, 83]}[box["color"]]
    assert max(abs(a - b) for a, b in zip(edge[:3], want, strict=True)) < 40, (edge, box["color"])
    assert mid[3] == 0, "the face itself must not be covered"
    # The face list shows the score as text, with a sparkline.
    page.wait_for_function("() => document.querySelectorAll('#faces li').length > 0", timeout=30000)
    assert "face " in page.inner_text("#faces")
    shot = env["tmp"] / f"viewer_{mode}.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


def test_alert_banner(env: Any, page: Any) -> None:
    page.wait_for_selector("#alert:not([hidden])", timeout=120000)
    assert "ALERT" in page.inner_text("#alert")
    assert page.inner_text("#status").startswith("live")


def test_status_reconnecting_when_source_drops(env: Any, page: Any) -> None:
    if env["mode"] != "mjpeg":
        pytest.skip("the RTSP camera (reconnecting) runs in the mjpeg analyzer")
    env["rtsp"].stop()
    try:
        page.wait_for_function("() => window.ftcnViewer.state === 'reconnecting'", timeout=30000)
        assert page.inner_text("#status").startswith("reconnecting")
        page.screenshot(path=str(env["tmp"] / "viewer_reconnecting.png"))
    finally:
        env["rtsp"].start()
    page.wait_for_function("() => window.ftcnViewer.state === 'live'", timeout=60000)


def test_no_console_errors(env: Any, page: Any) -> None:
    assert page.errors == [], page.errors


def test_token_guards_the_viewer_data(env: Any) -> None:
    """With http.token set, the page loads but its data needs the token (header or ?access_token=)."""
    import urllib.error
    import urllib.request

    if not env["token"]:
        pytest.skip("only the MJPEG analyzer of this module runs with a token")
    with urllib.request.urlopen(f"{env['base']}/viewer", timeout=10) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{env['base']}/streams", timeout=10)
    assert exc.value.code == 401
    with urllib.request.urlopen(f"{env['base']}/streams?access_token={env['token']}", timeout=10) as r:
        assert r.status == 200
