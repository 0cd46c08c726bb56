"""The set of temporal modules of one MuseV motion checkpoint, under the checkpoint's own key names."""
from __future__ import annotations

import os

import torch
from torch import nn

from .checkpoint import (FLAVOUR_REFERENCENET, REFERENCE_FAMILIES, CheckpointError, LevelLayout, MotionLayout,
                         infer_motion_layout, musev_key_family, read_state_dict, split_motion_state_dict)
from .embeddings import FrameEmbedding, window_frame_index
from .temporal import TemporalConvLayer, TemporalTransformer


class _LevelModules(nn.Module):
    """`temp_convs.N` and `temp_attentions.N` of one diffusers block."""

    def __init__(self, layout: LevelLayout, femb_channels: int, operations, dtype, device):
        super().__init__()
        self.temp_convs = nn.ModuleList(
            [TemporalConvLayer(layout.channels, operations, dtype, device) for _ in range(layout.temp_convs)])
        self.temp_attentions = nn.ModuleList(
            [TemporalTransformer(layout.channels, femb_channels, operations=operations, dtype=dtype, device=device)
             for _ in range(layout.temp_attentions)])


class MuseVMotionModule(nn.Module):
    """All temporal modules of a MuseV UNet, addressable by diffusers block position.

    The state-dict keys equal the checkpoint's MuseV keys (`down_blocks.0.temp_convs.0.conv1.0.weight`,
    `mid_block.temp_attentions.0...`, `transformer_in...`, `frame_embedding...`), so a released file loads with
    `load_state_dict(strict=True)` on its MuseV subset. The modules are placed into a 2-D UNet by an adapter; this
    class only owns them.

    Args:
        layout: geometry and flavour, usually from `infer_motion_layout`.
        operations: layer classes namespace (torch.nn, or ComfyUI's comfy.ops for casting/low-VRAM).
    """

    def __init__(self, layout: MotionLayout, operations=nn, dtype=None, device=None):
        super().__init__()
        self.layout = layout
        femb = layout.femb_channels
        self.down_blocks = nn.ModuleList([_LevelModules(lv, femb, operations, dtype, device) for lv in layout.down])
        self.mid_block = _LevelModules(layout.mid, femb, operations, dtype, device)
        self.up_blocks = nn.ModuleList([_LevelModules(lv, femb, operations, dtype, device) for lv in layout.up])
        self.transformer_in = (
            TemporalTransformer(layout.transformer_in_channels, femb, operations=operations, dtype=dtype, device=device)
            if layout.transformer_in else None)
        self.frame_embedding = FrameEmbedding(layout.frame_channels, femb, operations, dtype, device)

    @property
    def flavour(self) -> str:
        return self.layout.flavour

    @property
    def scales_frame_index(self) -> bool:
        """The referencenet flavour multiplies frame positions by motion_speed (`use_anivv1_cfg`)."""
        return self.layout.flavour == FLAVOUR_REFERENCENET

    def frame_embedding_for(self, num_frames: int, motion_speed: float, device=None, dtype=None) -> torch.Tensor:
        """Frame embedding `(num_frames, femb_channels)` of one UNet call (positions relative to the call).

        The referencenet flavour also applies MuseV's extra SiLU (`femb_nonlinearity`).
        """
        index = window_frame_index(num_frames, motion_speed, self.scales_frame_index, device=device)
        femb = self.frame_embedding(index, dtype=dtype)
        if self.scales_frame_index:
            femb = torch.nn.functional.silu(femb)
        return femb

    def named_temporal_modules(self):
        """Yield `(diffusers_prefix, module)` for every temporal conv/attention, e.g. `down_blocks.0.temp_convs.1`."""
        for name, module in self.named_modules():
            if isinstance(module, (TemporalConvLayer, TemporalTransformer)):
                yield name, module


def load_motion_module(path: str, operations=nn, dtype=None, device=None, name: str | None = None):
    """Read a MuseV motion checkpoint and build its temporal modules with the stored weights.

    Args:
        path: `.safetensors` (or pickled `.bin`, read with `weights_only=True`) of a MuseV UNet.
        operations, dtype, device: passed to the modules; weights are cast to `dtype` if given.
        name: file name for error messages (default: the base name of `path`).
    Returns:
        `(module, info)` where info is a dict with `flavour`, `musev_keys` (count consumed), `sd_keys_ignored`.
    Raises:
        CheckpointError: unreadable file, a file that is not a MuseV motion UNet, or missing/misshaped keys.
    """
    name = name or os.path.basename(path)
    state_dict = read_state_dict(path)
    return build_motion_module(state_dict, operations=operations, dtype=dtype, device=device, name=name)


def build_motion_module(state_dict: dict[str, torch.Tensor], operations=nn, dtype=None, device=None,
                        name: str = "checkpoint"):
    """Like `load_motion_module`, from an in-memory state dict (tensors may live on the `meta` device)."""
    musev_sd, sd_keys = split_motion_state_dict(state_dict, name)
    layout = infer_motion_layout(musev_sd, name)
    extra = {k: v for k, v in musev_sd.items() if musev_key_family(k) in REFERENCE_FAMILIES}
    handled = {k: v for k, v in musev_sd.items() if k not in extra}
    module = MuseVMotionModule(layout, operations=operations, dtype=dtype, device=device)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(handled))
    unexpected = sorted(set(handled) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{name}: MuseV keys do not form complete temporal modules "
            f"(missing {len(missing)}: {missing[:3]}, unexpected {len(unexpected)}: {unexpected[:3]})")
    for key, tensor in handled.items():
        if tuple(expected[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{name}: '{key}' has shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(expected[key].shape)}")
    if all(t.device.type != "meta" for t in handled.values()):
        module.load_state_dict(handled, strict=True)
    info = {"flavour": layout.flavour, "musev_keys": len(handled), "sd_keys_ignored": len(sd_keys),
            "extra_keys": extra}
    return module, info


__all__ = ["MuseVMotionModule", "load_motion_module", "build_motion_module", "CheckpointError"]
