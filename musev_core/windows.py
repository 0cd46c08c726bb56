"""Context windows and their fusion for MuseV's visual-conditioned parallel denoising (spec/musev.md §4.4).

Frames here are indices into the generated frames only (condition frames are not part of any window: the
adapter puts them in front of every window).
"""
from __future__ import annotations

import torch

FUSE_METHODS = ("flat", "pyramid", "overlap-linear")
SCHEDULES = ("uniform_v2",)


def validate_window_settings(num_frames: int, context_frames: int, context_overlap: int) -> str | None:
    """Return a message describing why these settings are impossible, or None when they are fine.

    Args:
        num_frames: generated frames L (condition frames excluded).
        context_frames: window length F in frames.
        context_overlap: overlap O in frames between neighbouring windows.
    """
    if num_frames < 1:
        return f"frames must be at least 1, got {num_frames}"
    if context_frames < 1:
        return f"context_frames must be at least 1, got {context_frames}"
    if context_overlap < 0:
        return f"context_overlap must be 0 or more, got {context_overlap}"
    if context_overlap >= context_frames:
        return (f"context_overlap ({context_overlap}) must be smaller than context_frames ({context_frames}): "
                f"windows would never advance")
    return None


def uniform_v2_windows(num_frames: int, context_frames: int, context_overlap: int) -> list[list[int]]:
    """MuseV's default `uniform_v2` window schedule.

    Windows start at 0, F-O, 2(F-O), ... while the start is inside the video; each covers
    `range(start, min(start + F, L))`, so tail windows may be shorter than F. If the last two windows end on the
    same frame the last one is dropped (once), as MuseV's `drop_last_repeat_context` does. The schedule is the same
    at every step (MuseV pipelines/context.py `uniform_v2` + MMCM `generate_sample_idxs`).

    Args:
        num_frames: L, generated frames.
        context_frames: F.
        context_overlap: O (< F).
    Returns:
        list of windows, each a list of frame indices in [0, L).
    Raises:
        ValueError: for impossible settings (see `validate_window_settings`).

    Examples (F=12, O=4): L=12 -> [0..11]; L=20 -> [0..11], [8..19]; L=24 -> [0..11], [8..19], [16..23].
    """
    problem = validate_window_settings(num_frames, context_frames, context_overlap)
    if problem:
        raise ValueError(problem)
    step = context_frames - context_overlap
    windows = [list(range(start, min(start + context_frames, num_frames)))
               for start in range(0, num_frames, step)]
    if len(windows) >= 2 and windows[-1][-1] == windows[-2][-1]:
        windows = windows[:-1]
    return windows


def fuse_weights(window: list[int], windows: list[list[int]], method: str) -> torch.Tensor:
    """Per-frame weights of one window's predictions when windows are fused.

    - `flat`: all 1, MuseV's plain average of overlapping predictions (the default, needed for parity).
    - `pyramid`: triangular 1, 2, ..., 2, 1, favouring each window's centre.
    - `overlap-linear`: 1 except linear cross-fades across the frames shared with the previous/next window,
      with ramps `(k+1)/(n+1)` so the two windows' weights on a shared frame sum to 1.

    Args:
        window: this window's frame indices.
        windows: all windows of the schedule (for the neighbours of `overlap-linear`).
        method: one of FUSE_METHODS.
    Returns:
        `(len(window),)` float32 weights.
    Raises:
        ValueError: unknown method.
    """
    n = len(window)
    if method == "flat":
        return torch.ones(n)
    if method == "pyramid":
        return torch.tensor([float(min(i + 1, n - i)) for i in range(n)])
    if method == "overlap-linear":
        weights = torch.ones(n)
        members = set(window)
        position = windows.index(window) if window in windows else -1
        if position > 0:
            shared = len(members & set(windows[position - 1]))
            for k in range(shared):
                weights[k] = min(weights[k], (k + 1) / (shared + 1))
        if 0 <= position < len(windows) - 1:
            shared = len(members & set(windows[position + 1]))
            for k in range(shared):
                weights[n - shared + k] = min(weights[n - shared + k], (shared - k) / (shared + 1))
        return weights
    raise ValueError(f"unknown fuse method '{method}', expected one of {FUSE_METHODS}")


def window_count(num_frames: int, context_frames: int, context_overlap: int) -> int:
    """Number of `uniform_v2` windows (UNet calls per CFG branch and step)."""
    return len(uniform_v2_windows(num_frames, context_frames, context_overlap))
