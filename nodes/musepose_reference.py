"""ComfyUI adapter for MusePose's reference UNet (spec §4): run once at t = 0 to fill the self-attention bank.

The reference UNet is ComfyUI's own SD1.5 `UNetModel` without its output head (MusePose's class has none), loaded
from `reference_unet.pth` (diffusers keys). An `attn1_patch` records the input of every spatial self-attention
(`norm1` output); the denoising MODEL's patches (`musepose_model`) read the result.
"""
from __future__ import annotations

import torch
from torch import nn

import comfy.model_management
import comfy.model_patcher
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel, timestep_embedding

from ..musev_core.musepose.checkpoint import CheckpointFile, check_kind, unet_geometry
from .musepose_model import MusePoseReference, _convert_keys, _operations, _set_group_norm_groups, block_names, \
    comfy_unet_config


class ReferenceUNet(nn.Module):
    """MusePose's reference UNet: an SD1.5 UNet without output head, run once at t = 0 to fill the bank.

    Submodules are ComfyUI's (`time_embed`, `input_blocks`, `middle_block`, `output_blocks`).
    """

    def __init__(self, unet: UNetModel):
        super().__init__()
        self.model_channels = unet.model_channels
        self.time_embed = unet.time_embed
        self.input_blocks = unet.input_blocks
        self.middle_block = unet.middle_block
        self.output_blocks = unet.output_blocks
        self.names = block_names(unet)
        self.compute_dtype = torch.float32

    def forward(self, latent: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run at timestep 0 and collect every spatial block's `norm1` output (spec §4.2-4.3).

        Args:
            latent: `n 4 h w` reference latents (VAE posterior mean x 0.18215).
            context: `n 1 dim` CLIP image-embedding context.
        Returns:
            `{block prefix: (n, h'w', C)}` in the compute dtype.
        """
        bank = {}
        wanted = len(self.names)

        class _Done(Exception):
            pass

        def capture(n, context_attn1, value_attn1, extra_options):
            block = extra_options["block"]
            bank[self.names[(block[0], block[1], extra_options.get("block_index", 0))]] = n
            if len(bank) == wanted:
                raise _Done()  # nothing after the last write reaches the bank
            return n, context_attn1, value_attn1

        options = {"patches": {"attn1_patch": [capture]}}
        emb = self.time_embed(timestep_embedding(torch.zeros(latent.shape[0], device=latent.device),
                                                 self.model_channels).to(latent.dtype))
        h, skips = latent, []
        try:
            for index, block in enumerate(self.input_blocks):
                options["block"] = ("input", index)
                h = block(h, emb, context, transformer_options=options)
                skips.append(h)
            options["block"] = ("middle", 0)
            h = self.middle_block(h, emb, context, transformer_options=options)
            for index, block in enumerate(self.output_blocks):
                options["block"] = ("output", index)
                h = torch.cat([h, skips.pop()], dim=1)
                h = block(h, emb, context, transformer_options=options,
                          output_shape=skips[-1].shape if skips else None)
        except _Done:
            pass
        if len(bank) != wanted:
            raise RuntimeError(f"reference UNet filled {len(bank)} of {wanted} bank entries")
        return bank


def load_reference_unet(path: str, norm_num_groups: int = 32):
    """Build MusePose's reference UNet from `reference_unet.pth` (all 682 keys consumed) in a ModelPatcher.

    Raises:
        CheckpointError: a wrong, truncated or misshaped file, naming it and what was expected.
    """
    file = CheckpointFile(path)
    check_kind(file, "reference_unet")
    geometry = unet_geometry(file)
    config = comfy_unet_config(geometry)
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    params = sum(int(torch.Size(s).numel()) for s in file.shapes.values())
    weight_dtype = file.tensors(["conv_in.weight"])["conv_in.weight"].dtype
    dtype = comfy.model_management.unet_dtype(model_params=params, weight_dtype=weight_dtype)
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device)
    unet = UNetModel(**{**config, "dtype": dtype}, device="meta", operations=_operations(dtype, manual_cast))
    del unet.out  # MusePose's reference UNet has no output head (spec §1.2)
    reference = ReferenceUNet(unet)
    del unet
    expected = reference.state_dict()
    state = _convert_keys(file, config, expected, "MusePose reference UNet")
    reference.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    reference.to(offload_device)
    _set_group_norm_groups(reference, norm_num_groups)
    reference.compute_dtype = manual_cast or dtype
    reference.eval().requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(reference, load_device=load_device, offload_device=offload_device)
    return patcher, {"reference_keys": len(file.shapes), "geometry": geometry}


def encode_reference(patcher, latent: torch.Tensor, context: torch.Tensor,
                     round_to_float16: bool = True) -> MusePoseReference:
    """Fill the bank: the reference UNet once at t = 0 on the reference latent, cond context (spec §4.3).

    Only the cond half is computed: MusePose's uncond half of the bank is never read with CFG (spec §4.5), and
    without CFG the pipeline runs the cond context alone.

    Args:
        latent: `1 4 h w` reference latent in model space (VAE mean x 0.18215).
        context: `1 1 dim` CLIP image embedding (the positive conditioning).
        round_to_float16: store the bank as float16 like MusePose (spec §4.4); False keeps float32 (parity checks).
    Returns:
        `MusePoseReference` on ComfyUI's intermediate device.
    """
    comfy.model_management.load_models_gpu([patcher])
    reference = patcher.model
    device, dtype = patcher.load_device, reference.compute_dtype
    with torch.no_grad():
        bank = reference(latent.to(device=device, dtype=dtype), context.to(device=device, dtype=dtype))
    out = comfy.model_management.intermediate_device()
    store = torch.float16 if round_to_float16 else torch.float32
    return MusePoseReference({k: v.to(store).to(out) for k, v in bank.items()},
                             (int(latent.shape[-2]), int(latent.shape[-1])))
