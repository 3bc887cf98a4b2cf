"""Real services for stream tests: a mosquitto broker and a gst-rtsp-server, on random loopback ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

HELPERS = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def terminate(proc: subprocess.Popen | None) -> None:
    """Stop a server subprocess: SIGTERM, then SIGKILL if it has not exited within 5 s."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Mosquitto:
    """mosquitto on 127.0.0.1:port (anonymous); stop()/start() keep the port for restart tests."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto_{self.port}.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


def make_rtsp_video(src: Path, dst: Path, size: int = 192, loops: int = 3, fps: int = 15) -> Path:
    """Decode the shared video, downscale, re-encode to H.264 (short GOP) and loop it: cheap to serve."""
    if not dst.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(src), "-an",
             "-vf", f"scale={size}:{size},fps={fps}", "-c:v", "libx264", "-preset", "ultrafast",
             "-tune", "zerolatency", "-g", str(fps), "-pix_fmt", "yuv420p", str(dst)],
            check=True,
        )
    return dst


class RTSPServer:
    """gst-rtsp-server subprocess (system python3 + gi) serving `video` at rtsp://127.0.0.1:port/cam."""

    def __init__(self, video: Path, port: int | None = None, mount: str = "/cam") -> None:
        self.video = video
        self.port = port or free_port()
        self.mount = mount
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(HELPERS / "rtsp_server.py"), str(self.video), "--port", str(self.port),
             "--mount", self.mount],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"RTSP server did not start: {line!r}")

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None
