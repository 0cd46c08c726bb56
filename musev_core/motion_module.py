"""The modules MuseV adds to an SD1.5 UNet, from one motion checkpoint, under the checkpoint's own key names."""
from __future__ import annotations

import re

import torch
from torch import nn

from .checkpoint import (FLAVOUR_REFERENCENET, CheckpointError, CheckpointFile, LevelLayout, MotionLayout,
                         infer_motion_layout, split_motion_state_dict)
from .embeddings import FrameEmbedding, window_frame_index
from .reference import IPAdapterKV, ReferenceFusionAttention, reference_feature_index
from .temporal import TemporalConvLayer, TemporalTransformer, sdpa_attention

#: Where a reference-fusion attention reads its ReferenceNet feature: "mid" or a down-feature index.
MID_FEATURE = "mid"
_DOWN_FUSION = re.compile(r"^down_blocks\.(\d+)\.refer_emb_attns\.(\d+)$")


def _attach(root: nn.Module, dotted: str, module: nn.Module) -> None:
    """Place `module` at the dotted path under `root`, creating plain containers on the way (keeps key names)."""
    *parents, leaf = dotted.split(".")
    node = root
    for name in parents:
        child = node._modules.get(name)
        if child is None:
            child = nn.Module()
            node.add_module(name, child)
        node = child
    node.add_module(leaf, module)


class _LevelModules(nn.Module):
    """`temp_convs.N` and `temp_attentions.N` of one diffusers block."""

    def __init__(self, layout: LevelLayout, femb_channels: int, operations, dtype, device, attention):
        super().__init__()
        self.temp_convs = nn.ModuleList(
            [TemporalConvLayer(layout.channels, operations, dtype, device) for _ in range(layout.temp_convs)])
        self.temp_attentions = nn.ModuleList(
            [TemporalTransformer(layout.channels, femb_channels, operations=operations, dtype=dtype, device=device,
                                 attention=attention) for _ in range(layout.temp_attentions)])


class MuseVMotionModule(nn.Module):
    """All non-SD modules of a MuseV UNet, addressable by diffusers block position.

    Temporal convolutions and attentions, the frame embedding and, for the referencenet flavour, the 13
    reference-fusion attentions and 16 IP-Adapter K/V pairs.

    The state-dict keys equal the checkpoint's MuseV keys (`down_blocks.0.temp_convs.0.conv1.0.weight`,
    `mid_block.temp_attentions.0...`, `transformer_in...`, `frame_embedding...`), so a released file loads with
    `load_state_dict(strict=True)` on its MuseV subset. The modules are placed into a 2-D UNet by an adapter; this
    class only owns them.

    Args:
        layout: geometry and flavour, usually from `infer_motion_layout`.
        operations: layer classes namespace (torch.nn, or ComfyUI's comfy.ops for casting/low-VRAM).
        attention: `attention(q, k, v, heads)` used by every temporal, fusion and IP attention (default PyTorch
            SDPA, `musev_core.temporal.sdpa_attention`; an adapter passes its host's optimized attention).
    """

    def __init__(self, layout: MotionLayout, operations=nn, dtype=None, device=None, attention=sdpa_attention):
        super().__init__()
        self.layout = layout
        femb = layout.femb_channels
        self.down_blocks = nn.ModuleList([_LevelModules(lv, femb, operations, dtype, device, attention)
                                          for lv in layout.down])
        self.mid_block = _LevelModules(layout.mid, femb, operations, dtype, device, attention)
        self.up_blocks = nn.ModuleList([_LevelModules(lv, femb, operations, dtype, device, attention)
                                        for lv in layout.up])
        self.transformer_in = (
            TemporalTransformer(layout.transformer_in_channels, femb, operations=operations, dtype=dtype, device=device,
                                attention=attention)
            if layout.transformer_in else None)
        self.frame_embedding = FrameEmbedding(layout.frame_channels, femb, operations, dtype, device)
        # referencenet flavour: ReferenceNet fusion attentions and IP-Adapter K/V under their checkpoint names
        for prefix, channels in sorted(layout.fusion_channels.items()):
            _attach(self, prefix, ReferenceFusionAttention(channels, operations=operations, dtype=dtype,
                                                           device=device, attention=attention))
        for prefix, (channels, context_dim) in sorted(layout.ip_shapes.items()):
            _attach(self, prefix, IPAdapterKV(channels, context_dim, operations=operations, dtype=dtype,
                                              device=device, attention=attention))

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

    @property
    def zeroes_condition_temb(self) -> bool:
        """The referencenet flavour gives condition frames a zero time embedding (`keep_vision_condtion`)."""
        return self.layout.flavour == FLAVOUR_REFERENCENET

    def reference_fusions(self):
        """Yield `(prefix, module, feature)` for each fusion attention.

        `feature` is the ReferenceNet down-feature index it reads (see `reference_feature_index`) or `MID_FEATURE`.
        """
        num_levels, layers = len(self.layout.down), self.layout.layers_per_block
        for prefix in sorted(self.layout.fusion_channels):
            module = self.get_submodule(prefix)
            if prefix == "first_refer_emb_attns":
                yield prefix, module, 0
            elif prefix == "mid_block_refer_emb_attns":
                yield prefix, module, MID_FEATURE
            else:
                match = _DOWN_FUSION.match(prefix)
                if match is None:
                    raise CheckpointError(f"unexpected reference-fusion attention '{prefix}'")
                level, position = int(match.group(1)), int(match.group(2))
                yield prefix, module, reference_feature_index(level, position, num_levels, layers)

    def ip_adapter_kvs(self):
        """Yield `(prefix, IPAdapterKV)`, e.g. `('down_blocks.0.attentions.0.transformer_blocks.0.attn2', ...)`."""
        for prefix in sorted(self.layout.ip_shapes):
            yield prefix, self.get_submodule(prefix)

    def named_temporal_modules(self):
        """Yield `(diffusers_prefix, module)` for every temporal conv/attention, e.g. `down_blocks.0.temp_convs.1`."""
        for name, module in self.named_modules():
            if isinstance(module, (TemporalConvLayer, TemporalTransformer)):
                yield name, module


def load_motion_module(path: str, operations=nn, dtype=None, device=None, name: str | None = None,
                       attention=sdpa_attention):
    """Read a MuseV motion checkpoint and build its temporal modules with the stored weights.

    Only the MuseV tensors are read from the file (the SD1.5 tensors it also holds are never materialised) and
    the modules are built on the meta device and take the read tensors as their parameters, so the load holds one
    copy of the kept weights and little else.

    Args:
        path: `.safetensors` (or pickled `.bin`, read with `weights_only=True`) of a MuseV UNet.
        operations, dtype, device: passed to the modules; floating-point weights are converted to `dtype`
            (default: torch's default dtype, float32).
        attention: `attention(q, k, v, heads)` of every MuseV attention (see `MuseVMotionModule`).
        name: file name for error messages (default: the base name of `path`).
    Returns:
        `(module, info)` where info is a dict with `flavour`, `musev_keys` (count consumed: temporal modules, frame
        embedding and, for the referencenet flavour, the fusion attentions and IP-Adapter K/V), `sd_keys_ignored`.
    Raises:
        CheckpointError: unreadable file, a file that is not a MuseV motion UNet, missing/misshaped keys, a pickle
            that would run code, or weights holding NaN/inf.
    """
    with CheckpointFile(path, name) as checkpoint:
        return build_motion_module(checkpoint, operations=operations, dtype=dtype, device=device,
                                   name=checkpoint.name, attention=attention)


def build_motion_module(source, operations=nn, dtype=None, device=None, name: str = "checkpoint",
                        attention=sdpa_attention):
    """Like `load_motion_module`, from an open `CheckpointFile` or an in-memory state dict.

    Args:
        source: a `CheckpointFile` (only the MuseV tensors are read), or `{key: tensor}` (tensors may live on the
            `meta` device: then the module is built on `device` without weights, for checks).
        operations, dtype, device, name, attention: as for `load_motion_module`.
    """
    from_file = isinstance(source, CheckpointFile)
    state_dict = source.meta_state_dict() if from_file else source
    prefixed = bool(state_dict) and all(k.startswith("unet.") for k in state_dict)
    musev_sd, sd_keys = split_motion_state_dict(state_dict, name)
    layout = infer_motion_layout(musev_sd, name)
    has_data = from_file or all(t.device.type != "meta" for t in musev_sd.values())
    module = MuseVMotionModule(layout, operations=operations, dtype=dtype,
                               device="meta" if has_data else device, attention=attention)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(musev_sd))
    unexpected = sorted(set(musev_sd) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{name}: MuseV keys do not form complete modules "
            f"(missing {len(missing)}: {missing[:3]}, unexpected {len(unexpected)}: {unexpected[:3]})")
    for key, tensor in musev_sd.items():
        if tuple(expected[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{name}: '{key}' has shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(expected[key].shape)}")
    if has_data:
        target = dtype or torch.get_default_dtype()
        if from_file:
            file_keys = {("unet." + k if prefixed else k): k for k in expected}
            weights = {file_keys[k]: v for k, v in source.read(file_keys, dtype=target, device=device).items()}
        else:
            weights = {k: musev_sd[k].to(device=device, dtype=target if musev_sd[k].is_floating_point() else None,
                                         copy=True) for k in expected}
        # the module was built on the meta device: take the read tensors as its parameters (no second copy)
        module.load_state_dict(weights, strict=True, assign=True)
    info = {"flavour": layout.flavour, "musev_keys": len(musev_sd), "sd_keys_ignored": len(sd_keys)}
    return module, info


__all__ = ["MuseVMotionModule", "load_motion_module", "build_motion_module", "CheckpointError"]
