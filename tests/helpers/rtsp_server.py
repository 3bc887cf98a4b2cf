"""A real RTSP server for tests: GStreamer's gst-rtsp-server serving an H.264 file on loopback.

Run with the system interpreter (python3-gi lives there), e.g.:
    /usr/bin/python3 tests/helpers/rtsp_server.py --port 8554 --mount /cam VIDEO.mp4
Every client gets its own pipeline from the start of the file (not shared), so a
reconnecting client simply starts over. The file should already be H.264 (the
fixture transcodes and loops the shared video with ffmpeg); it is only re-payloaded.
Prints "READY <port>" on stdout once listening.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mount", default="/cam")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    launch = f'( filesrc location="{args.video}" ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )'
    factory.set_launch(launch)
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print("ERROR could not attach", flush=True)
        return 1
    print(f"READY {args.port}", flush=True)
    try:
        GLib.MainLoop().run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
