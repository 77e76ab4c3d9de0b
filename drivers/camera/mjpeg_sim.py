"""A camera simulator without GStreamer: a video file as an HTTP MJPEG stream
(multipart/x-mixed-replace), the fallback when gst-rtsp-server is not installed.

    .venv/bin/python -m drivers.camera.mjpeg_sim --video lane.avi --port 8081

serves http://127.0.0.1:8081/stream.mjpg, pacing frames at the file's rate, looping at its end.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOUNDARY = "gatehouseframe"


def frames(video: str) -> tuple[list[bytes], float]:
    import cv2

    capture = cv2.VideoCapture(video)
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    out = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        out.append(bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1]))
    capture.release()
    if not out:
        raise SystemExit(f"mjpeg_sim: no frames in {video}")
    return out, fps


def make_server(video: str, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    jpegs, fps = frames(video)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/stream.mjpg":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.end_headers()
            started = time.monotonic()
            index = 0
            try:
                while True:
                    data = jpegs[index % len(jpegs)]
                    self.wfile.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n".encode()
                    )
                    self.wfile.write(data + b"\r\n")
                    index += 1
                    wait = started + index / fps - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, *_: Any) -> None:
            return

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve a video file as an HTTP MJPEG stream")
    parser.add_argument("--video", required=True, help="video file to serve")
    parser.add_argument("--port", type=int, default=8081, help="TCP port to listen on")
    args = parser.parse_args(argv)
    server = make_server(args.video, args.port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready http://127.0.0.1:{args.port}/stream.mjpg", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
