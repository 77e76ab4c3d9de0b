"""A camera simulator: serves a video file over RTSP with GStreamer's gst-rtsp-server.

It must run under the system python3, which has the GObject bindings from apt
(see .ci/apt-packages-vision.txt):

    /usr/bin/python3 drivers/camera/rtsp_sim.py --video lane.avi --port 8554 --path /lane

and serves rtsp://127.0.0.1:8554/lane (H.264 over RTP; clients may use TCP). Each client
session plays the file from the start at its own frame rate and ends with it (for an endless
demo stream use the MJPEG simulator, which loops, or a `loop: true` file source). The file
may be anything GStreamer's decodebin reads (an MJPEG .avi written by cv2.VideoWriter works).
It prints `ready rtsp://…` once it listens. Standard library and gi only: it imports nothing
from Gatehouse."""

from __future__ import annotations

import argparse
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve a video file over RTSP (gst-rtsp-server)")
    parser.add_argument("--video", required=True, help="video file to serve")
    parser.add_argument("--port", type=int, default=8554, help="TCP port to listen on")
    parser.add_argument("--path", default="/lane", help="mount path, e.g. /lane")
    args = parser.parse_args(argv)
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as err:
        print(
            f"rtsp_sim: {err}; run it with the system python3 after "
            "`apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-ugly gstreamer1.0-libav`",
            file=sys.stderr,
        )
        return 2

    Gst.init(None)
    location = args.video.replace("\\", "\\\\").replace('"', '\\"')
    launch = (
        f'( filesrc location="{location}" ! decodebin ! videoconvert ! video/x-raw,format=I420 '
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=1024 "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)

    server = GstRtspServer.RTSPServer()
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_sim: cannot listen on port {args.port}", file=sys.stderr)
        return 1
    main_loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, main_loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    main_loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
