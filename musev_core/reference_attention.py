"""MuseV's parameter-free "reference-only" self-attention (spec/musev.md §1.6).

In the 16 spatial self-attentions of the UNet, every frame's keys/values come from its own tokens followed by the
tokens of the clean condition frame(s) of the same call, so every frame looks at the condition image
(MuseV attention_processor.py `NonParamReferenceIPXFormersAttnProcessor`).
"""
from __future__ import annotations

import torch


def reference_only_context(tokens: torch.Tensor, num_frames: int, condition_index: list[int]) -> torch.Tensor:
    """Keys/values source for reference-only self-attention.

    Args:
        tokens: `(b t) s c` LayerNormed block input (s = h*w spatial tokens).
        num_frames: t, frames per batch entry in this call (condition frames included).
        condition_index: positions of the condition frame(s) inside each call (e.g. `[0]`).
    Returns:
        `(b t) (s + n_vis*s) c`: each frame's own tokens, then the condition frames' tokens of its batch entry
        flattened as `(n_vis s)`.
    Raises:
        ValueError: when the batch is not a whole number of `num_frames`-frame calls or an index is out of range.
    """
    bt, s, c = tokens.shape
    if bt % num_frames:
        raise ValueError(f"{bt} token rows are not a whole number of {num_frames}-frame calls")
    if not condition_index or max(condition_index) >= num_frames or min(condition_index) < 0:
        raise ValueError(f"condition frame index {condition_index} outside 0..{num_frames - 1}")
    b = bt // num_frames
    video = tokens.reshape(b, num_frames, s, c)
    reference = video[:, condition_index].reshape(b, 1, len(condition_index) * s, c)
    reference = reference.expand(b, num_frames, len(condition_index) * s, c)
    return torch.cat([video, reference], dim=2).reshape(bt, -1, c)
