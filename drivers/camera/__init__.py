"""Cameras through OpenCV (RTSP, USB, file): newest-frame grabbing, reconnection, health,
tamper, and the plate and occupancy pipelines; plus RTSP and MJPEG stream simulators."""
