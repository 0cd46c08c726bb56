"""MusePose's own modules in plain torch: AnimateDiff-style motion modules and the pose guider.

Written from spec/musepose.md §2.4, §5.6 (TMElyralab/MusePose @ 61c52bd, `musepose/models/motion_module.py`,
`musepose/models/pose_guider.py`), not copied. Key names match MusePose's released `motion_module.pth` and
`pose_guider.pth`. Every module takes `operations` (default `torch.nn`: `Linear`, `Conv2d`, `GroupNorm`,
`LayerNorm`), so the ComfyUI adapter can pass `comfy.ops` classes; attention modules also take `attention`, a
callable `attention(q, k, v, heads) -> out` on `n s (heads d)` tensors (default: MuseV's `sdpa_attention`), with the
signature of ComfyUI's `optimized_attention`, so the adapter can route them to ComfyUI's attention backends.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..temporal import FeedForward, sdpa_attention

#: MusePose inference_v2.yaml motion_module_kwargs: 8 heads (head_dim C/8), PE for up to 128 frames.
MOTION_HEADS = 8
MOTION_MAX_FRAMES = 128
#: The motion module's GroupNorm always has 32 groups (MusePose never overrides `norm_num_groups`).
MOTION_NORM_GROUPS = 32


def sinusoidal_positions(channels: int, max_len: int = MOTION_MAX_FRAMES) -> torch.Tensor:
    """MusePose's motion-module positional encoding (motion_module.py `PositionalEncoding`), float32.

    `pe[0, p, 2i] = sin(p * exp(-2i ln(10000) / C))`, `pe[0, p, 2i+1] = cos(same)`.

    Returns:
        `(1, max_len, channels)` float32, identical to the buffer MusePose constructs.
    """
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, channels, 2) * (-math.log(10000.0) / channels))
    pe = torch.zeros(1, max_len, channels)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Adds the window-relative sinusoid: frame `p` of the window (0..T-1) gets `pe[p]` (spec §5.6, quirk 10.5).

    The buffer is not persistent: MusePose's loader discards the stored `pe` (spec §1.1), so it never comes from a file.
    """

    def __init__(self, channels: int, max_len: int = MOTION_MAX_FRAMES):
        super().__init__()
        self.register_buffer("pe", sinusoidal_positions(channels, max_len), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: `n t c` (t <= max_len). Returns `x + pe[:, :t]` in x's dtype."""
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"MusePose motion modules handle at most {self.pe.shape[1]} frames per window, "
                             f"got {x.shape[1]}: lower context_frames")
        return x + self.pe[:, :x.shape[1]].to(device=x.device, dtype=x.dtype)


class TemporalSelfAttention(nn.Module):
    """MusePose `VersatileAttention` with `Temporal_Self`: self-attention over the frames of every pixel.

    Keys: `to_q`, `to_k`, `to_v` (no bias), `to_out.0` (bias). The PE is added to the input before q, k and v.

    Args:
        channels: C; heads: attention heads (head_dim C/heads).
        attention: `attention(q, k, v, heads)` callable, default `sdpa_attention`.
    """

    def __init__(self, channels: int, heads: int = MOTION_HEADS, max_len: int = MOTION_MAX_FRAMES, operations=nn,
                 attention=None, dtype=None, device=None):
        super().__init__()
        self.heads = heads
        self.attention = attention or sdpa_attention
        self.to_q = operations.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_k = operations.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_v = operations.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([operations.Linear(channels, channels, dtype=dtype, device=device),
                                     nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(channels, max_len)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: `(b t) s c` tokens (s = h w). Returns `(b t) s c` (no residual)."""
        bt, s, c = x.shape
        b = bt // num_frames
        y = x.reshape(b, num_frames, s, c).permute(0, 2, 1, 3).reshape(b * s, num_frames, c)
        y = self.pos_encoder(y)
        y = self.attention(self.to_q(y), self.to_k(y), self.to_v(y), self.heads)
        y = self.to_out[1](self.to_out[0](y))
        return y.reshape(b, s, num_frames, c).permute(0, 2, 1, 3).reshape(bt, s, c)


class TemporalTransformerBlock(nn.Module):
    """Two temporal self-attentions and a GEGLU feed-forward, each pre-LayerNorm with a residual.

    Keys: `attention_blocks.{0,1}.*`, `norms.{0,1}.*`, `ff.net.0.proj.*`, `ff.net.2.*`, `ff_norm.*` (LayerNorm eps 1e-5).
    """

    def __init__(self, channels: int, heads: int = MOTION_HEADS, max_len: int = MOTION_MAX_FRAMES, operations=nn,
                 attention=None, dtype=None, device=None):
        super().__init__()
        self.attention_blocks = nn.ModuleList([
            TemporalSelfAttention(channels, heads, max_len, operations, attention, dtype, device) for _ in range(2)])
        self.norms = nn.ModuleList([operations.LayerNorm(channels, dtype=dtype, device=device) for _ in range(2)])
        self.ff = FeedForward(channels, operations, dtype, device)
        self.ff_norm = operations.LayerNorm(channels, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: `(b t) s c`. Returns the same shape."""
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x), num_frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3D(nn.Module):
    """MusePose `TemporalTransformer3DModel`: GroupNorm (32 groups, eps 1e-6, per frame) -> Linear proj_in ->
    one block -> Linear proj_out -> `+ residual`. Keys: `norm`, `proj_in`, `transformer_blocks.0`, `proj_out`."""

    def __init__(self, channels: int, heads: int = MOTION_HEADS, max_len: int = MOTION_MAX_FRAMES, operations=nn,
                 attention=None, dtype=None, device=None):
        super().__init__()
        self.norm = operations.GroupNorm(MOTION_NORM_GROUPS, channels, eps=1e-6, affine=True, dtype=dtype,
                                         device=device)
        self.proj_in = operations.Linear(channels, channels, dtype=dtype, device=device)
        self.transformer_blocks = nn.ModuleList([
            TemporalTransformerBlock(channels, heads, max_len, operations, attention, dtype, device)])
        self.proj_out = operations.Linear(channels, channels, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: `(b t) c h w` (frames fastest inside each batch entry). Returns `(b t) c h w`."""
        bt, c, h, w = x.shape
        if bt % num_frames:
            raise ValueError(f"batch of {bt} images is not a whole number of {num_frames}-frame windows")
        residual = x
        y = self.norm(x).permute(0, 2, 3, 1).reshape(bt, h * w, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, num_frames)
        y = self.proj_out(y)
        return y.reshape(bt, h, w, c).permute(0, 3, 1, 2) + residual


class MotionModule(nn.Module):
    """MusePose `VanillaTemporalModule`: one `temporal_transformer` (keys `temporal_transformer.*`).

    Placed after every spatial transformer (or after the ResBlock where a layer has none) of the denoising UNet,
    21 of them in SD1.5 geometry (spec §5.2). Works on the 2-D UNet layout `(b t) c h w`.
    """

    def __init__(self, channels: int, heads: int = MOTION_HEADS, max_len: int = MOTION_MAX_FRAMES, operations=nn,
                 attention=None, dtype=None, device=None):
        super().__init__()
        self.channels = channels
        self.temporal_transformer = TemporalTransformer3D(channels, heads, max_len, operations, attention, dtype,
                                                          device)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: `(b t) c h w`; num_frames: t, the frames of the window. Returns `(b t) c h w` in x's dtype."""
        return self.temporal_transformer(x, num_frames).to(x.dtype)


class MotionModules(nn.Module):
    """All motion modules of `motion_module.pth`, under its key names (`down_blocks.{i}.motion_modules.{j}`,
    `mid_block.motion_modules.0`, `up_blocks.{i}.motion_modules.{j}`).

    Args:
        positions: `{prefix: channels}`, e.g. from `motion_module_positions` or `checkpoint.motion_layout`.
        attention: attention callable for every temporal attention (default SDPA).
    """

    def __init__(self, positions: dict[str, int], operations=nn, attention=None, dtype=None, device=None):
        super().__init__()
        self.positions = dict(positions)
        for prefix, channels in positions.items():
            parts = prefix.split(".")
            parent = self
            for i, part in enumerate(parts[:-1]):
                if part.isdigit():
                    while len(parent) <= int(part):
                        parent.append(nn.Module() if parts[i + 1] == "motion_modules" else nn.ModuleList())
                    parent = parent[int(part)]
                else:
                    if not hasattr(parent, part):
                        is_list = i + 1 < len(parts) and parts[i + 1].isdigit()
                        parent.add_module(part, nn.ModuleList() if is_list else nn.Module())
                    parent = getattr(parent, part)
            index = int(parts[-1])
            while len(parent) <= index:
                parent.append(nn.Identity())
            parent[index] = MotionModule(channels, operations=operations, attention=attention, dtype=dtype,
                                         device=device)

    def named_motion_modules(self):
        """`(prefix, MotionModule)` pairs in `positions` order."""
        for prefix in self.positions:
            yield prefix, self.get_submodule(prefix)


def motion_module_positions(block_out_channels, layers_per_block: int = 2) -> dict[str, int]:
    """Where MusePose's UNet3D has motion modules (inference_v2.yaml: resolutions [1, 2, 4, 8], mid block on).

    Args:
        block_out_channels: e.g. (320, 640, 1280, 1280).
        layers_per_block: ResBlocks per down block (up blocks have one more).
    Returns:
        `{prefix: channels}` in down, mid, up order (21 entries for SD1.5).
    """
    positions = {}
    for level, channels in enumerate(block_out_channels):
        for layer in range(layers_per_block):
            positions[f"down_blocks.{level}.motion_modules.{layer}"] = channels
    positions["mid_block.motion_modules.0"] = block_out_channels[-1]
    for level, channels in enumerate(reversed(list(block_out_channels))):
        for layer in range(layers_per_block + 1):
            positions[f"up_blocks.{level}.motion_modules.{layer}"] = channels
    return positions


class PoseGuider(nn.Module):
    """MusePose `PoseGuider`: pose images -> features added after the denoising UNet's conv_in (spec §2.4).

    `conv_in` (3 -> c0) + SiLU; for each consecutive pair (c, c') of `block_out_channels`: conv c->c + SiLU,
    conv c->c' stride 2 + SiLU; `conv_out` (c_last -> embedding channels), no activation. All convs 3x3, padding 1,
    per frame. Keys: `conv_in`, `blocks.0..5`, `conv_out`.

    Args:
        embedding_channels: output channels (320 = the UNet's model_channels).
        block_out_channels: (16, 32, 96, 256) in the released model.
        conditioning_channels: 3 (RGB pose renders).
    """

    def __init__(self, embedding_channels: int = 320, block_out_channels=(16, 32, 96, 256),
                 conditioning_channels: int = 3, operations=nn, dtype=None, device=None):
        super().__init__()
        kw = dict(kernel_size=3, padding=1, dtype=dtype, device=device)
        self.conv_in = operations.Conv2d(conditioning_channels, block_out_channels[0], **kw)
        blocks = []
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            blocks.append(operations.Conv2d(c_in, c_in, **kw))
            blocks.append(operations.Conv2d(c_in, c_out, stride=2, **kw))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = operations.Conv2d(block_out_channels[-1], embedding_channels, **kw)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """Args: pose `f 3 H W` in [0, 1] (MusePose does not normalise to [-1, 1]).

        Returns: `f C H/8 W/8` features (float dtype of the weights).
        """
        x = F.silu(self.conv_in(pose))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)
