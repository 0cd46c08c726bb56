"""Optional dependencies of pose_align, imported only where a pose function runs.

`import pose_align` (and so the whole node pack) works without OpenCV and onnxruntime; a pose function that needs
one says which package to install. onnxruntime's usage telemetry is switched off through its environment variable
before the first onnxruntime import: the pack promises no network at run time, and on Linux onnxruntime 1.32 sends
events unless `ORT_DISABLE_TELEMETRY=1` is set when it loads (`disable_telemetry_events()` does not stop them).
A user's own value of the variable is kept.
"""
from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def opencv():
    """The `cv2` module.

    Raises:
        ModuleNotFoundError: naming the package to install (opencv-python-headless).
    """
    try:
        import cv2
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError("MuseV's pose nodes need OpenCV: pip install opencv-python-headless",
                                  name="cv2") from error
    return cv2


def onnxruntime():
    """The `onnxruntime` module, imported with its telemetry off (unless the user set ORT_DISABLE_TELEMETRY).

    Raises:
        ModuleNotFoundError: naming the package to install (onnxruntime, or onnxruntime-gpu for CUDA).
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError("DWPose extraction needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu "
                                  "for CUDA)", name="onnxruntime") from error
    return onnxruntime
