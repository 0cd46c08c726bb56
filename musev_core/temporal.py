"""MuseV's temporal modules, written to be placed into any SD1.5-shaped UNet.

Both modules take and return the 2-D UNet layout `(b t) c h w` (frames vary fastest inside each batch entry) and
reshape internally, so they can sit between the per-frame ResBlocks and spatial transformers of a 2-D UNet.
Every module takes an `operations` namespace (default `torch.nn`) providing `Linear`, `Conv3d`, `GroupNorm` and
`LayerNorm`, so an adapter can pass ComfyUI's `comfy.ops` classes for low-VRAM casting and fp16/bf16, and an
`attention` function (default `sdpa_attention`) so an adapter can pass ComfyUI's optimized attention (xformers,
sage, flash, split/sub-quadratic, batch-size limits) without this package importing ComfyUI.
Key names match MuseV's released checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: MuseV's released UNets use `attention_head_dim=8` in the SD1.5 sense: 8 heads of C/8 channels everywhere.
TEMPORAL_HEADS = 8


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention with PyTorch's `scaled_dot_product_attention` (the default `attention` function).

    The interface every MuseV module expects of its `attention` argument (ComfyUI's `optimized_attention` has it):

    Args:
        q: `b n (heads d)` projected queries.
        k, v: `b m (heads d)` projected keys and values (m may differ from n).
        heads: number of heads.
    Returns:
        `b n (heads d)`, softmax(q k^T / sqrt(d)) v per head, no mask, no dropout.
    """
    b, n, inner = q.shape
    d = inner // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, n, inner)


def _to_video(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`(b t) c h w` -> `b c t h w`."""
    bt, c, h, w = x.shape
    if bt % num_frames:
        raise ValueError(f"batch of {bt} images is not a whole number of {num_frames}-frame videos")
    return x.reshape(bt // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


def _temporal_residual(x: torch.Tensor, y: torch.Tensor, temporal_weight: torch.Tensor) -> torch.Tensor:
    """MuseV's `video + |temporal_weight| * y`, written straight into x's `(b t) c h w` layout.

    Args:
        x: `(b t) c h w` module input.
        y: the module's output branch as a `b t c h w` tensor or view.
    Returns:
        `(b t) c h w` in x's dtype.
    """
    y = y * torch.abs(temporal_weight).to(device=y.device, dtype=y.dtype)
    return (x.reshape(y.shape) + y).reshape(x.shape).to(x.dtype)


class _ConvOverTime:
    """Mixin for a `Conv3d` whose kernel covers time only (`(k, 1, 1)`, stride 1 and no padding in h, w).

    Such a convolution is the same arithmetic as a `Conv2d` with kernel `(k, 1)` over `b c t (h w)`; PyTorch's 2-D
    kernels run it about 1.3-1.9x faster on CPU (bitwise the same result, see bench/bench_unet_real.py). Only
    `_conv_forward` changes, so the provider's weight casting (comfy.ops manual cast, low-VRAM offload) still
    applies, and the parameter keeps MuseV's `(C, C, k, 1, 1)` shape and key.
    """

    def _conv_forward(self, input, weight, bias, *args, **kwargs):
        if self.kernel_size[1:] != (1, 1) or self.stride[1:] != (1, 1) or tuple(self.padding[1:]) != (0, 0):
            return super()._conv_forward(input, weight, bias, *args, **kwargs)
        b, c, t, h, w = input.shape
        out = F.conv2d(input.reshape(b, c, t, h * w), weight.reshape(weight.shape[:4]), bias,
                       stride=self.stride[:2], padding=self.padding[:2], dilation=self.dilation[:2], groups=self.groups)
        return out.reshape(b, out.shape[1], out.shape[2], h, w)


_TIME_CONV_CLASSES: dict[type, type] = {}


def time_conv_class(conv3d: type) -> type:
    """`conv3d` (torch.nn.Conv3d or a comfy.ops Conv3d) with `_ConvOverTime`'s faster forward; one class per base."""
    if conv3d not in _TIME_CONV_CLASSES:
        _TIME_CONV_CLASSES[conv3d] = type(f"TimeOnly{conv3d.__name__}", (_ConvOverTime, conv3d), {})
    return _TIME_CONV_CLASSES[conv3d]


class TemporalConvLayer(nn.Module):
    """Temporal convolution after every ResBlock (MuseV resnet.py `TemporalConvLayer`).

    Four `GroupNorm(32, C) -> SiLU -> (Dropout) -> Conv3d(C, C, (3, 1, 1))` stages over `b c t h w`;
    output `x + |temporal_weight| * f(x)`. Keys: `conv{1..4}.{0,2|3}.*`, `temporal_weight`.
    GroupNorm statistics pool all frames of the call, condition frames included. The convolutions run as
    `(3, 1)` 2-D convolutions over `b c t (h w)` (`_ConvOverTime`: same result, faster).

    Args:
        channels: C, the ResBlock's output channels.
        operations: `Conv3d`/`GroupNorm` provider (torch.nn or comfy.ops).
    """

    def __init__(self, channels: int, operations=nn, dtype=None, device=None):
        super().__init__()
        conv = time_conv_class(operations.Conv3d)

        def stage(with_dropout: bool) -> nn.Sequential:
            layers = [operations.GroupNorm(32, channels, dtype=dtype, device=device), nn.SiLU(inplace=True)]
            if with_dropout:
                layers.append(nn.Dropout(0.0))
            layers.append(conv(channels, channels, (3, 1, 1), padding=(1, 0, 0), dtype=dtype, device=device))
            return nn.Sequential(*layers)

        self.conv1 = stage(with_dropout=False)
        self.conv2 = stage(with_dropout=True)
        self.conv3 = stage(with_dropout=True)
        self.conv4 = stage(with_dropout=True)
        self.temporal_weight = nn.Parameter(torch.full((1,), 1e-5, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Args: x `(b t) c h w`; num_frames t. Returns `(b t) c h w` in x's dtype."""
        video = _to_video(x, num_frames)
        y = self.conv4(self.conv3(self.conv2(self.conv1(video))))
        return _temporal_residual(x, y.transpose(1, 2), self.temporal_weight)


class SelfAttention(nn.Module):
    """Multi-head self-attention with diffusers key names (`to_q`, `to_k`, `to_v` without bias, `to_out.0`).

    `attention(q, k, v, heads)` computes the attention itself (see `sdpa_attention`).
    """

    def __init__(self, dim: int, heads: int, operations=nn, dtype=None, device=None, attention=sdpa_attention):
        super().__init__()
        self.heads = heads
        self.attention = attention
        self.to_q = operations.Linear(dim, dim, bias=False, dtype=dtype, device=device)
        self.to_k = operations.Linear(dim, dim, bias=False, dtype=dtype, device=device)
        self.to_v = operations.Linear(dim, dim, bias=False, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([operations.Linear(dim, dim, dtype=dtype, device=device), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: `n s c` (s tokens). Returns `n s c`."""
        out = self.attention(self.to_q(x), self.to_k(x), self.to_v(x), self.heads)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    """`proj: Linear(dim, 2 * inner)`; output `a * gelu(gate)`."""

    def __init__(self, dim: int, inner: int, operations=nn, dtype=None, device=None):
        super().__init__()
        self.proj = operations.Linear(dim, inner * 2, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return F.gelu(gate).mul_(value)  # = value * gelu(gate) exactly, one buffer fewer


#: On CPU the feed-forward runs in row chunks whose GEGLU projection (rows x 8 dim values) stays under this many
#: bytes. glibc serves buffers above 32 MB as fresh mmap pages, and first-touching them cost more than the GEMMs
#: of the 320-channel layers at 16x16 latent (2 x 13 frames: 150 -> 131 ms, bitwise equal; bench/bench_feed_forward.py).
CPU_FEED_FORWARD_CHUNK_BYTES = 16 << 20
#: Fewer rows per chunk re-read the weights too often (1280 channels, 416 rows: 147 ms whole, 237 ms in 139-row chunks).
CPU_FEED_FORWARD_MIN_ROWS = 1024


def feed_forward_row_chunks(rows: int, dim: int, element_size: int, device: torch.device) -> int:
    """How many row chunks `FeedForward` splits `rows` tokens of width `dim` into (1: no split).

    Only on CPU (see `CPU_FEED_FORWARD_CHUNK_BYTES`); other devices keep one GEMM, which their caching allocators
    and kernels prefer. Each chunk has at least `CPU_FEED_FORWARD_MIN_ROWS` rows.
    """
    if device.type != "cpu":
        return 1
    projected_bytes = rows * 8 * dim * element_size
    by_size = -(-projected_bytes // CPU_FEED_FORWARD_CHUNK_BYTES)
    return max(1, min(by_size, rows // CPU_FEED_FORWARD_MIN_ROWS))


class FeedForward(nn.Module):
    """GEGLU feed-forward with diffusers keys `net.0.proj`, `net.2` (inner width 4 x dim).

    Row-wise, so the rows may run in chunks: on CPU they do (`feed_forward_row_chunks`), with the same result.
    """

    def __init__(self, dim: int, operations=nn, dtype=None, device=None):
        super().__init__()
        inner = dim * 4
        self.net = nn.ModuleList([
            GEGLU(dim, inner, operations, dtype, device),
            nn.Dropout(0.0),
            operations.Linear(inner, dim, dtype=dtype, device=device),
        ])

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: `... c`. Returns the same shape."""
        dim = x.shape[-1]
        rows = x.numel() // dim
        chunks = feed_forward_row_chunks(rows, dim, x.element_size(), x.device)
        if chunks == 1:
            return self._rows(x)
        flat = x.reshape(rows, dim)
        step = -(-rows // chunks)
        out = None
        for start in range(0, rows, step):
            part = self._rows(flat[start:start + step])
            if out is None:
                out = part.new_empty((rows, part.shape[-1]))
            out[start:start + step] = part
        return out.reshape(*x.shape[:-1], out.shape[-1])


#: LayerNorm eps of norm1/norm3 in MuseV's transformer blocks. MuseV attention.py `BasicTransformerBlock` passes its
#: arguments to diffusers' block positionally and `final_dropout=False` lands in `norm_eps`, so norm1 and norm3
#: run with eps 0 (norm2 is rebuilt with the default 1e-5). The trained weights saw this; parity needs it.
MUSEV_BLOCK_NORM_EPS = 0.0


class TemporalTransformerBlock(nn.Module):
    """One transformer block over the time axis with two self-attentions (`double_self_attention`).

    MuseV attention.py `BasicTransformerBlock` as used in temporal layers: attn2 is also self-attention (text
    never enters temporal layers). Pre-LayerNorm residual branches: attn1, attn2, feed-forward. LayerNorm eps:
    norm1/norm3 `MUSEV_BLOCK_NORM_EPS` (0), norm2 1e-5, as in MuseV.
    """

    def __init__(self, dim: int, heads: int, operations=nn, dtype=None, device=None, attention=sdpa_attention):
        super().__init__()
        self.norm1 = operations.LayerNorm(dim, eps=MUSEV_BLOCK_NORM_EPS, dtype=dtype, device=device)
        self.attn1 = SelfAttention(dim, heads, operations, dtype, device, attention)
        self.norm2 = operations.LayerNorm(dim, eps=1e-5, dtype=dtype, device=device)
        self.attn2 = SelfAttention(dim, heads, operations, dtype, device, attention)
        self.norm3 = operations.LayerNorm(dim, eps=MUSEV_BLOCK_NORM_EPS, dtype=dtype, device=device)
        self.ff = FeedForward(dim, operations, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: `(b h w) t c`. Returns the same shape."""
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x)) + x
        return self.ff(self.norm3(x)) + x


class TemporalTransformer(nn.Module):
    """Temporal attention after every spatial transformer, and `transformer_in` after conv_in.

    MuseV temporal_transformer.py `TransformerTemporalModel`: GroupNorm(32, C, eps 1e-6) over `b c t h w`
    (statistics pool the whole call) -> `(b h w) t c` -> proj_in -> `+ frame_emb_proj(SiLU(femb))` -> one
    double-self-attention block -> proj_out -> `x + |temporal_weight| * y`.
    Keys: `norm.*`, `proj_in.*`, `frame_emb_proj.*`, `transformer_blocks.0.*`, `proj_out.*`, `temporal_weight`.

    Args:
        channels: C.
        femb_channels: width of the frame embedding (1280 for SD1.5).
        heads: attention heads (8 in every released MuseV UNet).
        attention: `attention(q, k, v, heads)` of both self-attentions (see `sdpa_attention`).
    """

    def __init__(self, channels: int, femb_channels: int, heads: int = TEMPORAL_HEADS, operations=nn,
                 dtype=None, device=None, attention=sdpa_attention):
        super().__init__()
        self.norm = operations.GroupNorm(32, channels, eps=1e-6, affine=True, dtype=dtype, device=device)
        self.proj_in = operations.Linear(channels, channels, dtype=dtype, device=device)
        self.frame_emb_proj = operations.Linear(femb_channels, channels, dtype=dtype, device=device)
        self.femb_act = nn.SiLU()
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, operations, dtype, device,
                                                                          attention)])
        self.proj_out = operations.Linear(channels, channels, dtype=dtype, device=device)
        self.temporal_weight = nn.Parameter(torch.full((1,), 1e-5, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, femb: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Apply temporal attention.

        Args:
            x: `(b t) c h w` features.
            femb: `(t, femb_channels)` frame embedding shared by the batch, or `(b, t, femb_channels)`.
            num_frames: t.
        Returns:
            `(b t) c h w` in x's dtype.
        """
        video = _to_video(x, num_frames)
        b, c, t, h, w = video.shape
        y = self.norm(video)
        y = y.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
        y = self.proj_in(y)
        frame_term = self.frame_emb_proj(self.femb_act(femb.to(y.dtype)))
        if frame_term.ndim == 2:
            y = y + frame_term[None]
        else:
            y = y + frame_term.repeat_interleave(h * w, dim=0)
        for block in self.transformer_blocks:
            y = block(y)
        y = self.proj_out(y)
        return _temporal_residual(x, y.reshape(b, h, w, t, c).permute(0, 3, 4, 1, 2), self.temporal_weight)
