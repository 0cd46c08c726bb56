"""MuseV's initial noise: video-fusion noise and the image-based blend (spec/musev.md §4.3).

Tensors use MuseV's video layout `b c t h w`. Draw order matters for seed parity with MuseV: the shared noise
`(b, c, 1, h, w)` is drawn before the per-frame noise `(b, c, L, h, w)`, both from one CPU generator.
"""
from __future__ import annotations

import torch

NOISE_TYPES = ("video_fusion", "random")


def initial_noise(shape: tuple[int, int, int, int, int], generator: torch.Generator, noise_type: str = "video_fusion",
                  w_ind_noise: float = 0.5) -> torch.Tensor:
    """Unit-variance starting noise for L generated frames.

    `video_fusion`: `sqrt(1 - w) * common + sqrt(w) * independent`, with `common` one frame broadcast over time
    (MuseV noise_util.py `video_fusion_noise`); `random`: independent per frame.

    Args:
        shape: `(b, c, L, h, w)` in latent cells.
        generator: CPU generator (seeded by the caller).
        noise_type: one of NOISE_TYPES.
        w_ind_noise: w in [0, 1], share of independent noise (MuseV default 0.5).
    Returns:
        float32 CPU tensor of `shape`.
    Raises:
        ValueError: unknown noise type or w outside [0, 1].
    """
    b, c, t, h, w = shape
    if noise_type == "random":
        return torch.randn(shape, generator=generator, dtype=torch.float32)
    if noise_type != "video_fusion":
        raise ValueError(f"unknown noise type '{noise_type}', expected one of {NOISE_TYPES}")
    if not 0.0 <= w_ind_noise <= 1.0:
        raise ValueError(f"w_ind_noise must be within [0, 1], got {w_ind_noise}")
    common = torch.randn((b, c, 1, h, w), generator=generator, dtype=torch.float32)
    independent = torch.randn((b, c, t, h, w), generator=generator, dtype=torch.float32)
    share = torch.tensor(w_ind_noise, dtype=torch.float32)
    return torch.sqrt(1 - share) * common + torch.sqrt(share) * independent


def blend_condition_into_noise(noise: torch.Tensor, condition_latents: torch.Tensor, img_weight: float) -> torch.Tensor:
    """MuseV's image-based video noise: `sqrt(a) * mean_t(Zc) + sqrt(1 - a) * noise`.

    Args:
        noise: `(b, c, L, h, w)` unit noise.
        condition_latents: `(b, c, n_vis, h, w)` clean condition latents (already VAE-scaled).
        img_weight: a in [0, 1] (MuseV default 1e-3).
    Returns:
        Blended noise, same shape as `noise`.
    Raises:
        ValueError: img_weight outside [0, 1] or spatial size mismatch.
    """
    if not 0.0 <= img_weight <= 1.0:
        raise ValueError(f"img_weight must be within [0, 1], got {img_weight}")
    if condition_latents.shape[-2:] != noise.shape[-2:]:
        raise ValueError(f"condition latent size {tuple(condition_latents.shape[-2:])} differs from the video's "
                         f"{tuple(noise.shape[-2:])}")
    mean = condition_latents.to(noise.dtype).mean(dim=2, keepdim=True).repeat(1, 1, noise.shape[2], 1, 1)
    return img_weight ** 0.5 * mean + (1 - img_weight) ** 0.5 * noise
