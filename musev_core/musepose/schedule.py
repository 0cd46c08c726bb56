"""MusePose's sampling arithmetic: context windows, pose padding, the zero-SNR DDIM schedule (spec §6, §7.2, §8).

Pure integer / float32 arithmetic, reproduced bit for bit (the parity fixtures check it). No ComfyUI import.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..windows import validate_window_settings as shared_window_problem

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
#: test_stage_2.py defaults (spec §8).
DEFAULT_CONTEXT_FRAMES = 48
DEFAULT_CONTEXT_OVERLAP = 4
DEFAULT_STEPS = 20
DEFAULT_CFG = 3.5


def validate_window_settings(num_frames: int, context_frames: int, context_overlap: int) -> str | None:
    """Why these MusePose window settings are impossible (a message), or None when fine.

    MuseV's checks (`musev_core.windows.validate_window_settings`, frames counted as poses) plus the 128 positions
    MusePose's motion modules encode.
    """
    if num_frames < 1:
        return f"the pose sequence must have at least 1 frame, got {num_frames}"
    if context_frames > 128:
        return f"context_frames must be at most 128 (MusePose's motion modules encode 128 positions), got {context_frames}"
    return shared_window_problem(num_frames, context_frames, context_overlap)


def musepose_windows(num_frames: int, context_frames: int, context_overlap: int,
                     context_stride: int = 1) -> list[list[int]]:
    """MusePose's window schedule: `context.uniform` as the pipeline calls it, always with step 0 (spec §7.2).

    With step 0 there is no ordered-halving shift: windows start at 0, S-O, 2(S-O), ... while `< L - O`, all of
    length S, and the last one wraps around modulo L. With `context_stride > 1`, dilated passes follow (frames
    `cs` apart), as in MusePose.

    Args:
        num_frames: L; context_frames: S; context_overlap: O (< S); context_stride: 1 in test_stage_2.
    Returns:
        windows as lists of frame indices in [0, L). Example L=16, S=8, O=2:
        `[0..7], [6..13], [12, 13, 14, 15, 0, 1, 2, 3]`.
    Raises:
        ValueError: impossible settings.
    """
    problem = validate_window_settings(num_frames, context_frames, context_overlap)
    if problem:
        raise ValueError(problem)
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    passes = min(context_stride, int(math.ceil(math.log2(num_frames / context_frames))) + 1)
    windows = []
    for cs in (1 << i for i in range(passes)):
        for start in range(0, num_frames - context_overlap, context_frames * cs - context_overlap):
            windows.append([(start + e) % num_frames for e in range(0, context_frames * cs, cs)])
    return windows


def pose_padding(num_frames: int, context_frames: int, context_overlap: int) -> int:
    """How many copies of the last pose test_stage_2.py appends so the windows tile the video (spec §8).

    `last = (L - S) % (S - O)`, `rep = (S - O - last) % (S - O)` (Python modulo, as in the script).
    """
    step = context_frames - context_overlap
    last = (num_frames - context_frames) % step
    return (step - last) % step


def alphas_cumprod(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """diffusers DDIM `alphas_cumprod` for MusePose's config: scaled-linear betas rescaled to zero terminal SNR.

    float32 throughout, bit-identical to diffusers 0.27.2; the last value is exactly 0.

    Returns:
        `(num_train_timesteps,)` float32.
    """
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, num_train_timesteps, dtype=torch.float32) ** 2
    sqrt_bar = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_bar[0].clone(), sqrt_bar[-1].clone()
    sqrt_bar = (sqrt_bar - last) * (first / (first - last))
    bar = sqrt_bar ** 2
    alphas = torch.cat([bar[0:1], bar[1:] / bar[:-1]])
    betas = 1 - alphas
    return torch.cumprod(1.0 - betas, dim=0)


def trailing_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """DDIM `timestep_spacing="trailing"`: `round(arange(T, 0, -T/n)) - 1` (steps_offset has no effect).

    Example n=3 -> [999, 666, 332].
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    ratio = num_train_timesteps / steps
    return [int(t) for t in (np.round(np.arange(num_train_timesteps, 0, -ratio)).astype(np.int64) - 1)]


def ddim_previous_timestep(t: int, steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> int:
    """DDIM's previous timestep, `t - T // n` (spec §6 quirk): not always the next trailing timestep.

    A negative result means "final alpha 1" (set_alpha_to_one).
    """
    return int(t) - num_train_timesteps // steps
