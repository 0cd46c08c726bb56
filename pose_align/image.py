"""Input conditioning and output sizes (spec/pose.md §1.2, §1.8, §3.7), ControlNet conventions."""
from __future__ import annotations

import numpy as np

from .optional import opencv


def hwc3(image: np.ndarray) -> np.ndarray:
    """uint8 image as `(H, W, 3)`: gray is repeated, RGBA is composited over white (rgb * a + 255 * (1 - a)).

    Raises:
        ValueError: not uint8, or not 1, 3 or 4 channels.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[2] == 3:
        return image
    if image.shape[2] == 1:
        return np.concatenate([image] * 3, axis=2)
    color = image[:, :, :3].astype(np.float32)
    alpha = image[:, :, 3:4].astype(np.float32) / 255.0
    return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def detection_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """ControlNet's resize_image size: short side to `resolution`, both sides rounded to a multiple of 64.

    Returns `(width, height)`; e.g. 1080 x 1920 at 512 gives 512 x 896 (the aspect ratio changes slightly).
    """
    k = float(resolution) / min(height, width)
    return int(np.round(width * k / 64.0)) * 64, int(np.round(height * k / 64.0)) * 64


def resize_for_detection(image: np.ndarray, resolution: int) -> np.ndarray:
    """ControlNet's resize_image: `detection_size`, LANCZOS4 when enlarging, AREA when shrinking."""
    height, width = image.shape[:2]
    new_width, new_height = detection_size(width, height, resolution)
    k = float(resolution) / min(height, width)
    cv2 = opencv()
    return cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)


def pose_map_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """comfyui_controlnet_aux's output-map size: short side = `resolution`, aspect ratio kept, no 64-padding.

    Returns `(width, height)` = (round(W * k), round(H * k)) with k = resolution / min(W, H).
    """
    k = float(resolution) / min(height, width)
    return int(np.round(width * k)), int(np.round(height * k))


def aligned_output_size(ref_width: int, ref_height: int, output_height: int = 768) -> tuple[int, int]:
    """MusePose's aligned-video size: height `output_height`, width from the reference aspect floored to even.

    Returns `(width, height)`; e.g. a 704 x 1216 reference at 768 gives 444 x 768.
    """
    return int(output_height / ref_height * ref_width // 2 * 2), int(output_height)
