"""Reference conditioning of MuseV's `musev_referencenet` UNets: ReferenceNet feature fusion and IP-Adapter.

- `ReferenceFusionAttention`: MuseV's `ReferEmbFuseAttention` (attention_processor.py), a residual attention that
  lets every frame attend to a ReferenceNet feature map (13 of them: after conv_in, after every down-block layer and
  downsampler, after the mid block; spec/musev.md §2.3).
- `reference_feature_index`: which ReferenceNet feature each fusion attention reads, with MuseV's last-block quirk.
- `IPAdapterKV`: the decoupled `to_k_ip` / `to_v_ip` projections MuseV adds to the 16 spatial cross-attentions.
- `ImageProjection`: IP-Adapter's `ImageProjModel` (CLIP image embedding -> 4 context tokens).
- `ReferenceFeatures`, `IPTokens`: the values passed from the reference nodes to the sampler.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .checkpoint import CheckpointError, CheckpointFile
from .temporal import sdpa_attention

#: MuseV builds every fusion attention with 8 heads of C/8 channels (`attention_head_dim=8`, SD1.5 sense).
FUSION_HEADS = 8


class ReferenceFusionAttention(nn.Module):
    """MuseV `ReferEmbFuseAttention`: frames attend to [reference tokens ; own tokens], residual output.

    For UNet features `x` `(b t) c h w` and a reference map `r` `b c t2 h2 w2` (t2 reference images): keys/values
    are `[r as (t2 h2 w2) tokens ; the frame's own h*w tokens]`, queries the frame's own tokens, no normalisation;
    `out = x + to_out(attention)`. Runs on every frame of the call (condition frame included) and both CFG halves.
    Keys `to_q.weight`, `to_k.weight`, `to_v.weight` (no bias), `to_out.0.{weight,bias}`.

    Args:
        channels: C of the UNet features at this position (also the reference map's channels).
        operations: `Linear` provider (torch.nn or comfy.ops).
        attention: `attention(q, k, v, heads)` (see `musev_core.temporal.sdpa_attention`).
    """

    def __init__(self, channels: int, heads: int = FUSION_HEADS, operations=nn, dtype=None, device=None,
                 attention=sdpa_attention):
        super().__init__()
        self.heads = heads
        self.attention = attention
        self.to_q = operations.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_k = operations.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_v = operations.Linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([operations.Linear(channels, channels, dtype=dtype, device=device),
                                     nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, reference: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Fuse one reference map into the UNet features.

        Args:
            x: `(b t) c h w` UNet hidden states (t = num_frames).
            reference: `b c t2 h2 w2` ReferenceNet feature of the same batch entries (CFG chunks).
            num_frames: t.
        Returns:
            `(b t) c h w`, x's dtype.
        Raises:
            ValueError: batch or channel mismatch between x and the reference.
        """
        bt, c, h, w = x.shape
        b = reference.shape[0]
        if bt != b * num_frames or reference.shape[1] != c:
            raise ValueError(f"reference feature {tuple(reference.shape)} does not match UNet features "
                             f"{tuple(x.shape)} with {num_frames} frames per batch entry")
        own = x.reshape(bt, c, h * w).transpose(1, 2)                       # (b t) hw c
        ref = reference.to(x.dtype).flatten(2).transpose(1, 2)              # b (t2 h2 w2) c

        def keys_or_values(project):
            # projection is row-wise: the reference tokens are projected once per batch entry, then shared by its
            # frames; the same as projecting [reference ; own] for every frame, as MuseV writes it
            shared = project(ref).repeat_interleave(num_frames, dim=0)      # (b t) (t2 h2 w2) c
            return torch.cat([shared, project(own)], dim=1)

        attended = self.attention(self.to_q(own), keys_or_values(self.to_k), keys_or_values(self.to_v), self.heads)
        out = self.to_out[1](self.to_out[0](attended))
        return x + out.transpose(1, 2).reshape(bt, c, h, w).to(x.dtype)


def reference_feature_index(level: int, position: int, num_levels: int, layers_per_block: int) -> int:
    """Index into the 12 ReferenceNet down features read by `down_blocks.{level}.refer_emb_attns.{position}`.

    ReferenceNet features follow the UNet skip order: 0 = conv_in, then per level its layers and (except the last
    level) its downsampler. MuseV slices them per block starting at `1 + n * level` where n is the CURRENT block's
    feature count (layers + 1, or layers for the last level), so the last level reads the features of the level
    before it (SD1.5: indices 7, 8 instead of 10, 11). The trained weights expect this, so it is kept
    (MuseV unet_3d_condition.py, down-block loop; spec/musev.md §1.10-1).

    Args:
        level: down block (0-based).
        position: layer within the block; `layers_per_block` for the downsampler.
        num_levels: number of down blocks (4 for SD1.5).
        layers_per_block: ResBlocks per down block (2 for SD1.5).
    Returns:
        feature index (0..11 for SD1.5).
    """
    is_last = level == num_levels - 1
    per_block = layers_per_block + (0 if is_last else 1)
    return 1 + per_block * level + position


class IPAdapterKV(nn.Module):
    """`attn2.to_k_ip` / `attn2.to_v_ip` of one spatial cross-attention (no bias).

    MuseV (attention_processor.py `T2IReferencenetIPAdapterXFormersAttnProcessor`) adds
    `ip_scale * softmax(Q K_ip^T / sqrt(d)) V_ip` to the text attention before `to_out`; the projections map the
    IP tokens (context width, 768 for SD1.5) to the attention's width. `attention(q, k, v, heads)` computes the
    attention (see `musev_core.temporal.sdpa_attention`).
    """

    def __init__(self, channels: int, context_dim: int, operations=nn, dtype=None, device=None,
                 attention=sdpa_attention):
        super().__init__()
        self.attention_fn = attention
        self.to_k_ip = operations.Linear(context_dim, channels, bias=False, dtype=dtype, device=device)
        self.to_v_ip = operations.Linear(context_dim, channels, bias=False, dtype=dtype, device=device)

    def attention(self, query: torch.Tensor, ip_tokens: torch.Tensor, heads: int) -> torch.Tensor:
        """Attention of already projected queries over the IP tokens.

        Args:
            query: `B n (heads d)` projected queries (`to_q` output).
            ip_tokens: `B m context_dim` IP tokens, one row per query row.
            heads: attention heads of the cross-attention.
        Returns:
            `B n (heads d)`, before `to_out` (the caller adds it, scaled, to the text attention).
        """
        key, value = self.to_k_ip(ip_tokens.to(query.dtype)), self.to_v_ip(ip_tokens.to(query.dtype))
        return self.attention_fn(query, key, value, heads)


class ImageProjection(nn.Module):
    """IP-Adapter `ImageProjModel`: `LayerNorm(reshape(Linear(embeds), (-1, tokens, dim)))`.

    Keys `proj.{weight,bias}` `(tokens*dim, embed_dim)`, `norm.{weight,bias}` `(dim,)`; MuseV: embed_dim 1024
    (ViT-H `image_embeds`), 4 tokens of 768 (tencent-ailab/IP-Adapter, MuseV configs/model/ip_adapter.py).
    """

    def __init__(self, embed_dim: int, tokens: int, dim: int, dtype=None, device=None):
        super().__init__()
        self.tokens = tokens
        self.dim = dim
        self.proj = nn.Linear(embed_dim, tokens * dim, dtype=dtype, device=device)
        self.norm = nn.LayerNorm(dim, eps=1e-5, dtype=dtype, device=device)

    @property
    def embed_dim(self) -> int:
        return self.proj.in_features

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Args: image_embeds `(n, embed_dim)`. Returns `(n, tokens, dim)`."""
        x = self.proj(image_embeds.to(self.proj.weight.dtype))
        return self.norm(x.reshape(-1, self.tokens, self.dim))


def _image_proj_keys(state_dict: dict, name: str) -> dict[str, str]:
    """`{file key: ImageProjection key}` of the four ImageProj tensors, in any layout MuseV/IP-Adapter files use.

    Nested files (`{"image_proj": {...}, "ip_adapter": {...}}`) arrive flattened by `CheckpointFile` as
    `image_proj.*` keys.
    """
    prefix = "image_proj." if any(k.startswith("image_proj.") for k in state_dict) else ""
    needed = ("proj.weight", "proj.bias", "norm.weight", "norm.bias")
    missing = [k for k in needed if prefix + k not in state_dict]
    if missing:
        keys = sorted(state_dict)[:3]
        raise CheckpointError(
            f"{name} is not an IP-Adapter image projection: missing {missing} (found keys like {keys}); expected "
            f"MuseV's ip_adapter_image_proj.bin (musev_referencenet/ folder)")
    return {prefix + k: k for k in needed}


def load_image_projection(path: str, name: str | None = None, dtype=torch.float32) -> ImageProjection:
    """Read MuseV's `ip_adapter_image_proj.bin` (or a `.safetensors` with the same keys).

    Accepts `{"image_proj": {...}, "ip_adapter": {...}}` (IP-Adapter layout; the `ip_adapter` K/V are ignored, as
    MuseV's scripts use the `to_k_ip`/`to_v_ip` stored in the motion UNet), flat `proj.*`/`norm.*` keys, or
    `image_proj.`-prefixed keys.

    Returns:
        an `ImageProjection` in eval mode on the CPU.
    Raises:
        CheckpointError: unreadable file, no image projection in it, a pickle that would run code, NaN/inf weights.
    """
    with CheckpointFile(path, name) as checkpoint:
        name = checkpoint.name
        wanted = _image_proj_keys(checkpoint.meta_state_dict(), name)
        weights = {wanted[k]: v for k, v in checkpoint.read(wanted, dtype=dtype).items()}
    dim = int(weights["norm.weight"].shape[0])
    out_features, embed_dim = (int(s) for s in weights["proj.weight"].shape)
    if out_features % dim:
        raise CheckpointError(f"{name}: proj.weight {tuple(weights['proj.weight'].shape)} is not a whole number of "
                              f"{dim}-wide tokens")
    module = ImageProjection(embed_dim, out_features // dim, dim, dtype=dtype, device="meta")
    module.load_state_dict(weights, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def ip_tokens(projection: ImageProjection, image_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional and unconditional IP tokens for one or more images.

    Several images are concatenated along the token axis, as MuseV does (`(t n)` tokens).

    Args:
        image_embeds: `(n_images, embed_dim)` CLIP vision `image_embeds` (projected pooled output).
    Returns:
        `(cond, uncond)`, each `(1, n_images * tokens, dim)`; uncond is the projection of zero embeddings (MuseV's
        unconditional branch), not zeros.
    Raises:
        ValueError: embedding width differs from the projection's input.
    """
    if image_embeds.ndim != 2 or image_embeds.shape[1] != projection.embed_dim:
        raise ValueError(f"the CLIP vision model gives image embeddings of shape {tuple(image_embeds.shape)}, the "
                         f"image projection expects width {projection.embed_dim} (MuseV's is the ViT-H IP-Adapter "
                         f"image encoder, 1024)")
    with torch.no_grad():
        cond = projection(image_embeds.float())
        uncond = projection(torch.zeros_like(image_embeds.float()))
    return cond.reshape(1, -1, projection.dim), uncond.reshape(1, -1, projection.dim)


#: ComfyUI's codes for the CFG chunks of a batch (`transformer_options["cond_or_uncond"]`): 0 positive, 1 negative.
COND, UNCOND = 0, 1


@dataclass(frozen=True, eq=False)
class ReferenceFeatures:
    """ReferenceNet output for one reference image set, per CFG branch (the sampler's MUSEV_REFERENCE value).

    Attributes:
        cond: 13 tensors, the 12 down features in UNet skip order then the mid feature, each `1 c t2 h w`
            (t2 reference images; latent cells at that level), computed with the positive context.
        uncond: the same with the negative context (MuseV's unconditional IP tokens or the negative prompt).
    Tensors are treated as immutable, so copies of this value (ComfyUI deep-copies model options) share them.
    """

    cond: tuple[torch.Tensor, ...]
    uncond: tuple[torch.Tensor, ...]

    def __deepcopy__(self, memo):
        return self

    @property
    def num_down(self) -> int:
        return len(self.cond) - 1

    def to(self, device=None, dtype=None) -> "ReferenceFeatures":
        """A copy with every tensor on `device` / in `dtype` (the sampler moves them once per run, not per call)."""
        def move(tensors):
            return tuple(t.to(device=device, dtype=dtype) for t in tensors)

        return ReferenceFeatures(cond=move(self.cond), uncond=move(self.uncond))

    def for_chunks(self, chunks: list[int], device=None, dtype=None) -> list[torch.Tensor]:
        """Features for a UNet batch of CFG chunks.

        Args:
            chunks: `cond_or_uncond` of the call, e.g. `[0, 1]`.
        Returns:
            13 tensors `b c t2 h w` (b = len(chunks)), rows in chunk order.
        """
        out = []
        for i in range(len(self.cond)):
            rows = [self.cond[i] if chunk == COND else self.uncond[i] for chunk in chunks]
            out.append(torch.cat(rows, dim=0).to(device=device, dtype=dtype))
        return out


@dataclass(frozen=True, eq=False)
class IPTokens:
    """IP-Adapter tokens for the spatial cross-attentions (the sampler's MUSEV_IP_TOKENS value).

    Attributes:
        cond: `1 n dim` tokens of the image(s) (n = 4 per image for MuseV).
        uncond: `1 n dim` projection of zero embeddings (MuseV's unconditional branch).
        scale: weight of the IP attention added to the text attention (MuseV `ip_adapter_scale`, default 1.0).
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    scale: float = 1.0

    def __deepcopy__(self, memo):
        return self

    def context_for_chunks(self, chunks: list[int]) -> torch.Tensor:
        """`b n dim` tokens for a batch of CFG chunks (the ReferenceNet context)."""
        return torch.cat([self.cond if chunk == COND else self.uncond for chunk in chunks], dim=0)

    def rows(self, chunks: list[int], num_frames: int, device=None, dtype=None) -> torch.Tensor:
        """`(b t) n dim` tokens, each chunk's tokens repeated for its `num_frames` frames."""
        tokens = self.context_for_chunks(chunks).repeat_interleave(num_frames, dim=0)
        return tokens.to(device=device, dtype=dtype)
