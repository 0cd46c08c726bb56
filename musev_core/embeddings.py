"""Sinusoidal position features and MuseV's frame embedding.

MuseV gives every frame of a UNet call a learned embedding of its position inside that call (condition frame(s)
first, then the window), never of its global position in the video (spec/musev.md §1.5).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of `positions`, cosine half first.

    Follows diffusers `Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)`, which MuseV uses for both the
    timestep (`time_proj`) and the frame index (`frame_proj`).

    Args:
        positions: `(n,)` tensor of positions (frame indices or timesteps), any numeric dtype.
        dim: even feature width (320 for SD1.5 geometry).
    Returns:
        `(n, dim)` float32 tensor `[cos(p * f_k), sin(p * f_k)]` with `f_k = max_period ** (-k / (dim / 2))`.
    Raises:
        ValueError: if `dim` is odd.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding needs an even dim, got {dim}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half
    args = positions[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class FrameEmbedding(nn.Module):
    """MuseV `frame_embedding`: sinusoid(frame index) -> Linear -> SiLU -> Linear.

    Key names `linear_1.*`, `linear_2.*` match the released checkpoints (diffusers `TimestepEmbedding`).

    Args:
        in_channels: sinusoid width (`block_out_channels[0]`, 320 for SD1.5).
        embed_channels: output width (4 x `block_out_channels[0]`, 1280 for SD1.5).
        operations: namespace with `Linear` (torch.nn or ComfyUI's `comfy.ops` classes).
    """

    def __init__(self, in_channels: int, embed_channels: int, operations=nn, dtype=None, device=None):
        super().__init__()
        self.in_channels = in_channels
        self.linear_1 = operations.Linear(in_channels, embed_channels, dtype=dtype, device=device)
        self.act = nn.SiLU()
        self.linear_2 = operations.Linear(embed_channels, embed_channels, dtype=dtype, device=device)

    def forward(self, frame_index: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Embed integer frame positions.

        Args:
            frame_index: `(t,)` long tensor of positions within the UNet call.
            dtype: compute dtype of the result (default: the weights' dtype).
        Returns:
            `(t, embed_channels)` frame embedding (before MuseV's per-module SiLU).
        """
        features = sinusoidal_embedding(frame_index, self.in_channels)
        features = features.to(dtype or self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(features)))


def window_frame_index(num_frames: int, motion_speed: float, scale_by_motion_speed: bool,
                       device: torch.device | None = None) -> torch.Tensor:
    """Frame positions MuseV feeds to `frame_embedding` for one UNet call.

    Positions are `arange(num_frames)` relative to the call (condition frames first). The referencenet flavour
    (`use_anivv1_cfg`) multiplies them by `motion_speed` and truncates to long (MuseV unet_3d_condition.py, "femb").

    Returns:
        `(num_frames,)` long tensor.
    """
    index = torch.arange(num_frames, dtype=torch.long, device=device)
    if scale_by_motion_speed:
        index = (index * motion_speed).to(torch.long)
    return index
