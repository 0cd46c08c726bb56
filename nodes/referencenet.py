"""ComfyUI adapter for MuseV's ReferenceNet (spec/musev.md §2): an SD1.5 encoder run once on the reference image.

The ReferenceNet is a 2-D SD1.5 UNet without its up path (298 keys: conv_in, time embedding, down blocks, mid
block). It is built from ComfyUI's own UNet blocks (`openaimodel.UNetModel` on the meta device, up path dropped),
so attention backends, dtype casting and model management are ComfyUI's; weights are loaded from the diffusers key
names of MuseV's `musev_referencenet/referencenet/` file.
"""
from __future__ import annotations

import re

import torch
from torch import nn

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.utils
from comfy.ldm.modules.attention import BasicTransformerBlock
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel, timestep_embedding

from ..musev_core.checkpoint import CheckpointError, CheckpointFile, describe_foreign_file, musev_key_family
from ..musev_core.reference import IPTokens, ReferenceFeatures
from ..musev_core.temporal import MUSEV_BLOCK_NORM_EPS

#: MuseV's SD1.5 attention layout: 8 heads everywhere (`attention_head_dim=8`).
REFERENCENET_HEADS = 8
_ENCODER_KEY = re.compile(r"^(conv_in|time_embedding|down_blocks|mid_block)\.")
_DECODER_KEY = re.compile(r"^(up_blocks|conv_norm_out|conv_out)\.")


def _count(keys, pattern: str) -> int:
    regex = re.compile(pattern)
    found = {int(m.group(1)) for k in keys for m in [regex.match(k)] if m}
    return max(found) + 1 if found else 0


def referencenet_unet_config(state_dict: dict[str, torch.Tensor], name: str) -> dict:
    """ComfyUI `UNetModel` arguments for the encoder geometry of a diffusers-layout ReferenceNet state dict.

    Raises:
        CheckpointError: the file is not a ReferenceNet (e.g. a MuseV motion UNet), naming what it looks like.
    """
    keys = list(state_dict)
    if any(musev_key_family(k) for k in keys) or not any(k.startswith("down_blocks.") for k in keys) \
            or "conv_in.weight" not in state_dict:
        what = describe_foreign_file(keys)
        if any(musev_key_family(k) for k in keys):
            what = ("a MuseV motion UNet (it has temporal layers); load it with 'Load MuseV UNet'")
        raise CheckpointError(f"{name} is not a MuseV ReferenceNet: expected the SD1.5 encoder keys of "
                              f"musev_referencenet/referencenet/ ('conv_in.weight', 'down_blocks.0...'), found {what}")
    unknown = [k for k in keys if not _ENCODER_KEY.match(k) and not _DECODER_KEY.match(k)]
    if unknown:
        raise CheckpointError(f"{name} holds keys that are not SD1.5 UNet keys, e.g. {sorted(unknown)[:3]}")
    model_channels, in_channels = (int(s) for s in state_dict["conv_in.weight"].shape[:2])
    levels = _count(keys, r"^down_blocks\.(\d+)\.")
    layers = _count(keys, r"^down_blocks\.0\.resnets\.(\d+)\.")
    mult = [int(state_dict[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) // model_channels
            for i in range(levels)]
    depth = []
    context_dim = None
    linear = False
    for level in range(levels):
        blocks = _count(keys, rf"^down_blocks\.{level}\.attentions\.0\.transformer_blocks\.(\d+)\.")
        depth += [blocks] * layers
        key = f"down_blocks.{level}.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        if key in state_dict:
            context_dim = int(state_dict[key].shape[1])
            linear = state_dict[f"down_blocks.{level}.attentions.0.proj_in.weight"].ndim == 2
    mid_depth = _count(keys, r"^mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    return {
        "image_size": 32, "in_channels": in_channels, "out_channels": in_channels,
        "model_channels": model_channels, "num_res_blocks": [layers] * levels, "channel_mult": mult,
        "transformer_depth": depth, "transformer_depth_output": [0] * (levels * (layers + 1)),
        "transformer_depth_middle": mid_depth, "use_spatial_transformer": True, "legacy": False,
        "context_dim": context_dim, "num_heads": REFERENCENET_HEADS, "num_head_channels": -1,
        "use_linear_in_transformer": linear, "adm_in_channels": None, "use_checkpoint": False,
    }


class ReferenceNetEncoder(nn.Module):
    """conv_in + time embedding + down blocks + mid block of an SD1.5 UNet, returning every skip feature.

    Submodules are ComfyUI's (`time_embed`, `input_blocks`, `middle_block` under ComfyUI's UNet key names).
    """

    def __init__(self, unet: UNetModel):
        super().__init__()
        self.model_channels = unet.model_channels
        self.time_embed = unet.time_embed
        self.input_blocks = unet.input_blocks
        self.middle_block = unet.middle_block
        self.compute_dtype = torch.float32

    def forward(self, latent: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """Run the encoder at timestep 0 (MuseV runs the ReferenceNet once, with `timestep = 0`).

        Args:
            latent: `n 4 h w` reference latents (model space: VAE latents x 0.18215).
            context: `n tokens dim` cross-attention context (IP tokens, or the prompt without an IP-Adapter).
        Returns:
            13 tensors `n c h' w'`: the 12 skip features in UNet order (conv_in, each layer, each downsampler),
            then the mid-block output.
        """
        timesteps = torch.zeros(latent.shape[0], device=latent.device)
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(latent.dtype))
        h, features = latent, []
        for block in self.input_blocks:
            h = block(h, emb, context, transformer_options={})
            features.append(h)
        features.append(self.middle_block(h, emb, context, transformer_options={}))
        return features


def build_referencenet_patcher(source, name: str):
    """Build the ReferenceNet from its file or state dict, in a ModelPatcher managed by ComfyUI.

    The encoder is built on the meta device and takes the read tensors as its weights (no second copy); from a
    `CheckpointFile` only the encoder tensors are read, converted one at a time to the UNet dtype ComfyUI picks
    (keys of an up path, if the file has one, are never read). Its spatial transformer blocks run with MuseV's
    LayerNorm eps (see musev_core/temporal.py).

    Args:
        source: an open `CheckpointFile` of `musev_referencenet/referencenet/...`, or its `{key: tensor}`.
        name: file name for messages.
    Returns:
        a `ModelPatcher` whose `.model` is a `ReferenceNetEncoder`.
    Raises:
        CheckpointError: not a ReferenceNet, missing/misshaped keys, or weights holding NaN/inf.
    """
    from_file = isinstance(source, CheckpointFile)
    state_dict = source.meta_state_dict() if from_file else source
    config = referencenet_unet_config(state_dict, name)
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    params = sum(v.numel() for k, v in state_dict.items() if _ENCODER_KEY.match(k))
    weight_dtype = next(iter(state_dict.values())).dtype
    dtype = comfy.model_management.unet_dtype(model_params=params, weight_dtype=weight_dtype)
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device)
    operations = comfy.ops.manual_cast if manual_cast is not None else comfy.ops.disable_weight_init
    unet = UNetModel(**config, dtype=dtype, device="meta", operations=operations)
    encoder = ReferenceNetEncoder(unet)
    del unet
    mapping = {diffusers_key: comfy_key for diffusers_key, comfy_key in comfy.utils.unet_to_diffusers(config).items()
               if diffusers_key in state_dict and _ENCODER_KEY.match(diffusers_key)}
    expected = encoder.state_dict()
    converted_keys = set(mapping.values())
    missing = sorted(set(expected) - converted_keys)
    unexpected = sorted(converted_keys - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{name}: ReferenceNet keys do not match an SD1.5 encoder (missing {len(missing)}: "
                              f"{missing[:3]}, unexpected {len(unexpected)}: {unexpected[:3]})")
    for diffusers_key, comfy_key in mapping.items():
        shape = tuple(state_dict[diffusers_key].shape)
        if tuple(expected[comfy_key].shape) != shape:
            raise CheckpointError(f"{name}: '{comfy_key}' has shape {shape}, expected "
                                  f"{tuple(expected[comfy_key].shape)}")
    if from_file:
        weights = source.read(mapping, dtype=dtype)
    else:
        weights = {k: state_dict[k].to(dtype) for k in mapping}
    encoder.load_state_dict({mapping[k]: v for k, v in weights.items()}, strict=True, assign=True)
    del weights
    encoder.to(offload_device)
    for block in encoder.modules():
        if isinstance(block, BasicTransformerBlock):
            block.norm1.eps = MUSEV_BLOCK_NORM_EPS
            block.norm3.eps = MUSEV_BLOCK_NORM_EPS
    encoder.compute_dtype = manual_cast or dtype
    encoder.eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(encoder, load_device=load_device, offload_device=offload_device)


def encode_reference(patcher, latent: torch.Tensor, cond_context: torch.Tensor,
                     uncond_context: torch.Tensor) -> ReferenceFeatures:
    """Run the ReferenceNet once per CFG branch (MuseV: `[z, z]` latents, `[uncond, cond]` context, t = 0).

    Args:
        patcher: from `build_referencenet_patcher`.
        latent: `t2 4 h w` reference latents in model space (t2 reference images).
        cond_context, uncond_context: `1 tokens dim` contexts of the two branches.
    Returns:
        `ReferenceFeatures` with 13 tensors `1 c t2 h' w'` per branch, float32 on ComfyUI's intermediate device.
    """
    comfy.model_management.load_models_gpu([patcher])
    encoder = patcher.model
    device = patcher.load_device
    dtype = encoder.compute_dtype
    out_device = comfy.model_management.intermediate_device()
    branches = []
    n = latent.shape[0]
    latent = latent.to(device=device, dtype=dtype)
    contexts = [c.to(device=device, dtype=dtype).expand(n, -1, -1) for c in (cond_context, uncond_context)]
    with torch.no_grad():
        if contexts[0].shape == contexts[1].shape:  # one batch for both branches, as MuseV runs it
            features = encoder(torch.cat([latent, latent]), torch.cat(contexts))
            per_branch = [[f[:n] for f in features], [f[n:] for f in features]]
        else:  # prompts of different lengths
            per_branch = [encoder(latent, context) for context in contexts]
    for features in per_branch:
        # (t2) c h w -> 1 c t2 h w
        branches.append(tuple(f.float().to(out_device).permute(1, 0, 2, 3)[None] for f in features))
    return ReferenceFeatures(cond=branches[0], uncond=branches[1])


def contexts_for(ip_tokens: IPTokens | None, positive, negative) -> tuple[torch.Tensor, torch.Tensor]:
    """The ReferenceNet's cross-attention context per branch: IP tokens when given, else the prompts (MuseV).

    Raises:
        ValueError: neither IP tokens nor both prompts are connected.
    """
    if ip_tokens is not None:
        return ip_tokens.cond, ip_tokens.uncond
    if positive is None or negative is None:
        raise ValueError("the ReferenceNet needs a context: connect ip_tokens (MuseV IP-Adapter Embed), or both "
                         "positive and negative conditioning")
    return positive[0][0][:1], negative[0][0][:1]
