"""Reading MuseV checkpoints and telling them apart from other model files.

A MuseV motion checkpoint (`musev/unet/diffusion_pytorch_model.safetensors` in TMElyralab/MuseV) is a FULL 3-D UNet
under diffusers key names: the 686 SD1.5 UNet keys plus MuseV's own keys. MuseV's loader overwrites every SD key
with the chosen text-to-image base (spec/musev.md §1.9), so only the MuseV keys are used here; the SD part comes
from the user's MODEL.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch

#: Families of keys that MuseV adds to an SD1.5 UNet (spec/musev.md §1.8).
MUSEV_KEY_PATTERNS = {
    "temp_convs": re.compile(r"(^|\.)temp_convs\.\d+\."),
    "temp_attentions": re.compile(r"(^|\.)temp_attentions\.\d+\."),
    "transformer_in": re.compile(r"^transformer_in\."),
    "frame_embedding": re.compile(r"^frame_embedding\."),
    "refer_emb_attns": re.compile(r"(^|\.)(first_|mid_block_)?refer_emb_attns\."),
    "ip_adapter_kv": re.compile(r"\.attn2\.to_[kv]_ip\.weight$"),
}

#: Key families of a plain diffusers SD1.5 UNet.
SD_UNET_KEY_PATTERN = re.compile(
    r"^(conv_in|conv_out|conv_norm_out|time_embedding)\.|"
    r"^(down_blocks\.\d+\.(resnets|attentions|downsamplers)|mid_block\.(resnets|attentions)|"
    r"up_blocks\.\d+\.(resnets|attentions|upsamplers))\.\d+\."
)

#: MuseV key families of the referencenet flavour that are not temporal modules (fusion attentions, IP K/V).
REFERENCE_FAMILIES = ("refer_emb_attns", "ip_adapter_kv")

FLAVOUR_MUSEV = "musev"
FLAVOUR_REFERENCENET = "musev_referencenet"


class CheckpointError(ValueError):
    """A model file is missing, unreadable, or not the kind of file the node expects."""


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` file, or a pickled `.bin/.pt/.pth/.ckpt` with `torch.load(weights_only=True)`.

    Args:
        path: file path.
    Returns:
        `{key: tensor}` on the CPU, as stored (dtype unchanged).
    Raises:
        CheckpointError: the file is missing, truncated, or not a state dict.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"model file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            import safetensors.torch
            state_dict = safetensors.torch.load_file(path, device="cpu")
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise several types for damaged files
        raise CheckpointError(
            f"could not read {os.path.basename(path)}: the file is truncated or not a "
            f"{'safetensors' if path.endswith('.safetensors') else 'PyTorch state-dict'} file ({exc})"
        ) from exc
    if isinstance(state_dict, dict) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{os.path.basename(path)} does not hold a flat state dict of tensors")
    return state_dict


def musev_key_family(key: str) -> str | None:
    """Name of the MuseV key family `key` belongs to, or None for any other key."""
    for family, pattern in MUSEV_KEY_PATTERNS.items():
        if pattern.search(key):
            return family
    return None


def describe_foreign_file(keys: list[str]) -> str:
    """Best guess, in words, of what a state dict that is not a MuseV motion UNet is."""
    if not keys:
        return "an empty file"
    if any("motion_modules." in k for k in keys):
        return "an AnimateDiff motion module (keys '...motion_modules...'); load it with AnimateDiff-Evolved"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return ("a single-file Stable Diffusion checkpoint (keys 'model.diffusion_model...'); "
                "put it in models/checkpoints and load it with Load Checkpoint")
    if any(k.startswith(("proj.", "norm.")) for k in keys) and len(keys) <= 8:
        return "an IP-Adapter image projection (keys 'proj.*', 'norm.*')"
    sd_keys = [k for k in keys if SD_UNET_KEY_PATTERN.search(k)]
    if sd_keys and len(sd_keys) == len(keys):
        if not any(k.startswith("up_blocks.") for k in keys):
            return "a MuseV ReferenceNet (SD1.5 encoder keys only, no temporal layers); use it with the ReferenceNet node"
        return "a plain SD1.5 UNet in diffusers layout (no MuseV temporal layers)"
    return f"an unknown model ({len(keys)} keys, first: {sorted(keys)[:3]})"


@dataclass
class LevelLayout:
    """Temporal modules of one UNet level (a diffusers down/up block) or of the mid block."""

    channels: int
    temp_convs: int
    temp_attentions: int


@dataclass
class MotionLayout:
    """Geometry and flavour of a MuseV motion checkpoint, inferred from its MuseV keys.

    Attributes:
        flavour: `musev` or `musev_referencenet`.
        down, up: per-level temporal module counts and channels (diffusers block order).
        mid: the mid block's temporal modules.
        transformer_in: whether a temporal transformer follows conv_in (`musev` only).
        frame_channels: sinusoid width of the frame embedding (320 for SD1.5).
        femb_channels: frame-embedding width (1280 for SD1.5).
        extra_families: key counts of the referencenet-only families (`refer_emb_attns`, `ip_adapter_kv`).
        fusion_channels: `{prefix: C}` of every reference-fusion attention (`first_refer_emb_attns`,
            `down_blocks.N.refer_emb_attns.M`, `mid_block_refer_emb_attns`); empty for `musev`.
        ip_shapes: `{prefix: (C, context_dim)}` of every IP-Adapter K/V pair, prefix up to `attn2`
            (`down_blocks.0.attentions.0.transformer_blocks.0.attn2`); empty for `musev`.
    """

    flavour: str
    down: list[LevelLayout]
    mid: LevelLayout
    up: list[LevelLayout]
    transformer_in: bool
    frame_channels: int
    femb_channels: int
    transformer_in_channels: int = 0
    extra_families: dict[str, int] = field(default_factory=dict)
    fusion_channels: dict[str, int] = field(default_factory=dict)
    ip_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def layers_per_block(self) -> int:
        """ResBlocks per down block (one temporal conv each)."""
        return self.down[0].temp_convs if self.down else 0


def split_motion_state_dict(state_dict: dict[str, torch.Tensor], name: str = "checkpoint"):
    """Split a MuseV motion UNet state dict into its MuseV keys and its SD1.5 keys.

    Accepts the diffusers layout of TMElyralab/MuseV (optionally under a `unet.` prefix).

    Args:
        state_dict: the file's tensors.
        name: file name used in error messages.
    Returns:
        `(musev_state_dict, sd_keys)`: the MuseV keys with their tensors, and the list of SD1.5 UNet keys that are
        ignored because the SD part comes from the user's base model.
    Raises:
        CheckpointError: when the file is not a MuseV motion UNet (the message says what it looks like instead),
        or holds keys that are neither SD1.5 UNet keys nor MuseV keys.
    """
    keys = list(state_dict.keys())
    if keys and all(k.startswith("unet.") for k in keys):
        state_dict = {k[len("unet."):]: v for k, v in state_dict.items()}
        keys = list(state_dict.keys())
    musev, sd_keys, unknown = {}, [], []
    for key in keys:
        if musev_key_family(key) is not None:
            musev[key] = state_dict[key]
        elif SD_UNET_KEY_PATTERN.search(key):
            sd_keys.append(key)
        else:
            unknown.append(key)
    required = ("temp_convs", "temp_attentions", "frame_embedding")
    present = {musev_key_family(k) for k in musev}
    if not all(family in present for family in required):
        raise CheckpointError(
            f"{name} is not a MuseV motion checkpoint: expected a MuseV UNet with temporal layers "
            f"(keys like 'down_blocks.0.temp_convs.0.conv1.0.weight', 'frame_embedding.linear_1.weight'), "
            f"found {describe_foreign_file(keys)}"
        )
    if unknown:
        raise CheckpointError(
            f"{name} holds {len(unknown)} keys that belong neither to an SD1.5 UNet nor to MuseV, "
            f"e.g. {sorted(unknown)[:3]}; expected a MuseV motion UNet in diffusers layout"
        )
    return musev, sd_keys


def _count_indices(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in keys for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def infer_motion_layout(musev_state_dict: dict[str, torch.Tensor], name: str = "checkpoint") -> MotionLayout:
    """Infer geometry and flavour from the MuseV keys of a motion checkpoint.

    Channels come from the temporal modules' GroupNorm weights; module counts from key indices.

    Raises:
        CheckpointError: when a module's keys are incomplete in a way that prevents reading its size.
    """
    keys = list(musev_state_dict)

    def level(prefix: str) -> LevelLayout:
        n_conv = _count_indices(keys, prefix + "temp_convs.")
        n_attn = _count_indices(keys, prefix + "temp_attentions.")
        weight_key = prefix + "temp_convs.0.conv1.0.weight"
        if n_conv and weight_key not in musev_state_dict:
            raise CheckpointError(f"{name} is incomplete: missing '{weight_key}'")
        channels = int(musev_state_dict[weight_key].shape[0]) if n_conv else 0
        return LevelLayout(channels, n_conv, n_attn)

    n_down = _count_indices(keys, "down_blocks.")
    n_up = _count_indices(keys, "up_blocks.")
    down = [level(f"down_blocks.{i}.") for i in range(n_down)]
    up = [level(f"up_blocks.{i}.") for i in range(n_up)]
    mid = level("mid_block.")
    for key in ("frame_embedding.linear_1.weight",):
        if key not in musev_state_dict:
            raise CheckpointError(f"{name} is incomplete: missing '{key}'")
    femb_channels, frame_channels = (int(s) for s in musev_state_dict["frame_embedding.linear_1.weight"].shape)
    transformer_in = any(k.startswith("transformer_in.") for k in keys)
    transformer_in_channels = 0
    if transformer_in:
        norm_key = "transformer_in.norm.weight"
        if norm_key not in musev_state_dict:
            raise CheckpointError(f"{name} is incomplete: missing '{norm_key}'")
        transformer_in_channels = int(musev_state_dict[norm_key].shape[0])
    extra = {}
    fusion_channels, ip_shapes = {}, {}
    for key in keys:
        family = musev_key_family(key)
        if family in REFERENCE_FAMILIES:
            extra[family] = extra.get(family, 0) + 1
        if family == "refer_emb_attns" and key.endswith(".to_q.weight"):
            fusion_channels[key[:-len(".to_q.weight")]] = int(musev_state_dict[key].shape[0])
        elif family == "ip_adapter_kv" and key.endswith(".to_k_ip.weight"):
            shape = musev_state_dict[key].shape
            ip_shapes[key[:-len(".to_k_ip.weight")]] = (int(shape[0]), int(shape[1]))
    flavour = FLAVOUR_REFERENCENET if "refer_emb_attns" in extra else FLAVOUR_MUSEV
    return MotionLayout(flavour=flavour, down=down, mid=mid, up=up, transformer_in=transformer_in,
                        frame_channels=frame_channels, femb_channels=femb_channels,
                        transformer_in_channels=transformer_in_channels, extra_families=extra,
                        fusion_channels=fusion_channels, ip_shapes=ip_shapes)
