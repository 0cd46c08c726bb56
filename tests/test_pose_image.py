"""Input conditioning and output-size rules (spec/pose.md §1.2, §1.8, §3.7)."""
import numpy as np
import pytest

from pose_align import aligned_output_size, detection_size, hwc3, pose_map_size, resize_for_detection


def test_hwc3():
    gray = np.array([[0, 128]], np.uint8)
    assert hwc3(gray).tolist() == [[[0, 0, 0], [128, 128, 128]]]
    rgba = np.array([[[200, 100, 0, 255], [200, 100, 0, 0], [100, 0, 50, 51]]], np.uint8)
    # composited over white: rgb * a + 255 * (1 - a), a = alpha / 255
    assert hwc3(rgba).tolist() == [[[200, 100, 0], [255, 255, 255], [224, 204, 214]]]
    rgb = np.zeros((2, 2, 3), np.uint8)
    assert hwc3(rgb) is rgb
    with pytest.raises(ValueError, match="expected a uint8 image, got float32"):
        hwc3(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"got \(2, 2, 2\)"):
        hwc3(np.zeros((2, 2, 2), np.uint8))


def test_controlnet_detection_size():
    assert detection_size(1080, 1920, 512) == (512, 896)   # the aspect ratio changes slightly
    assert detection_size(1920, 1080, 512) == (896, 512)
    assert detection_size(704, 1216, 512) == (512, 896)
    assert detection_size(300, 300, 512) == (512, 512)
    image = np.zeros((1920, 1080, 3), np.uint8)
    image[:960] = 255
    small = resize_for_detection(image, 512)
    assert small.shape == (896, 512, 3) and small[:440].min() == 255 and small[456:].max() == 0


def test_output_sizes():
    assert pose_map_size(1080, 1920, 512) == (512, 910)      # comfyui_controlnet_aux: aspect kept, no 64-padding
    assert pose_map_size(1280, 720, 512) == (910, 512)
    assert aligned_output_size(704, 1216, 768) == (444, 768)  # MusePose: height 768, width floored to even
