"""musev_core windows, fusion weights and noise (no ComfyUI)."""

import pytest
import torch

from musev_core.noise import blend_condition_into_noise, initial_noise
from musev_core.windows import fuse_weights, uniform_v2_windows, validate_window_settings


def spans(windows):
    return [(w[0], w[-1]) for w in windows]


@pytest.mark.parametrize("frames, expected", [
    (12, [(0, 11)]),                           # tail [8..11] ends where [0..11] ends: dropped
    (20, [(0, 11), (8, 19)]),
    (24, [(0, 11), (8, 19), (16, 23)]),
    (60, [(s, s + 11) for s in range(0, 49, 8)]),
    (5, [(0, 4)]),
])
def test_uniform_v2_matches_musev_examples(frames, expected):
    # spec/musev.md §4.4 examples with F=12, O=4
    assert spans(uniform_v2_windows(frames, 12, 4)) == expected


def test_uniform_v2_keeps_short_tail_window():
    # F=4, O=1 over 8 frames: the tail [6, 7] is shorter than F and kept (it ends on a new frame)
    assert uniform_v2_windows(8, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7]]


def test_windows_cover_every_frame_once_or_more():
    for frames in range(1, 80):
        covered = {f for w in uniform_v2_windows(frames, 12, 4) for f in w}
        assert covered == set(range(frames))


def test_window_settings_are_validated():
    assert validate_window_settings(0, 12, 4) == "frames must be at least 1, got 0"
    assert "must be smaller than context_frames" in validate_window_settings(24, 4, 4)
    assert validate_window_settings(24, 12, 4) is None
    with pytest.raises(ValueError, match="context_overlap \\(12\\) must be smaller"):
        uniform_v2_windows(24, 12, 12)


def test_fuse_weights():
    windows = uniform_v2_windows(20, 12, 4)
    assert torch.equal(fuse_weights(windows[0], windows, "flat"), torch.ones(12))
    assert fuse_weights([0, 1, 2, 3, 4], [[0, 1, 2, 3, 4]], "pyramid").tolist() == [1, 2, 3, 2, 1]
    assert fuse_weights([0, 1, 2, 3], [[0, 1, 2, 3]], "pyramid").tolist() == [1, 2, 2, 1]
    first, second = (fuse_weights(w, windows, "overlap-linear") for w in windows)
    # shared frames 8..11: the two windows' weights cross-fade and sum to 1
    assert torch.allclose(first[8:] + second[:4], torch.ones(4))
    assert first[:8].tolist() == [1.0] * 8 and second[4:].tolist() == [1.0] * 8
    assert first[8] > first[11] and second[0] < second[3]
    with pytest.raises(ValueError, match="unknown fuse method"):
        fuse_weights(windows[0], windows, "gauss")


def test_video_fusion_noise_draw_order_and_mix():
    shape = (1, 4, 6, 3, 5)
    noise = initial_noise(shape, torch.Generator().manual_seed(7), "video_fusion", 0.5)
    g = torch.Generator().manual_seed(7)
    common = torch.randn((1, 4, 1, 3, 5), generator=g)
    independent = torch.randn(shape, generator=g)
    assert torch.allclose(noise, 0.5 ** 0.5 * common + 0.5 ** 0.5 * independent, atol=1e-6)
    # w = 0: every frame gets the same noise; w = 1: plain per-frame noise
    same = initial_noise(shape, torch.Generator().manual_seed(1), "video_fusion", 0.0)
    assert torch.allclose(same, same[:, :, :1].expand_as(same))
    random = initial_noise(shape, torch.Generator().manual_seed(1), "random")
    assert torch.equal(random, torch.randn(shape, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="w_ind_noise must be within"):
        initial_noise(shape, torch.Generator(), "video_fusion", 1.5)


def test_condition_blend():
    noise = torch.zeros(1, 4, 3, 2, 2)
    condition = torch.full((1, 4, 2, 2, 2), 2.0)
    condition[:, :, 1] = 4.0  # mean over condition frames = 3
    out = blend_condition_into_noise(noise, condition, 0.25)
    assert torch.allclose(out, torch.full_like(out, 0.5 * 3.0))
    with pytest.raises(ValueError, match="differs from the video's"):
        blend_condition_into_noise(noise, torch.zeros(1, 4, 1, 3, 3), 0.1)
