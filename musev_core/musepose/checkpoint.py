"""Reading MusePose's four released files and telling them apart from other model files (spec §1).

TMElyralab/MusePose on Hugging Face ships `denoising_unet.pth` (686 spatial SD1.5 UNet keys, diffusers layout),
`motion_module.pth` (588 keys: 21 motion modules, incl. 42 `pos_encoder.pe` buffers), `reference_unet.pth`
(682 keys: an SD1.5 UNet without `conv_norm_out` / `conv_out`) and `pose_guider.pth` (16 keys).

Keys ignored on purpose (said here and in the loaders' info):
- the 42 `...attention_blocks.{0,1}.pos_encoder.pe` buffers of `motion_module.pth`: MusePose deletes every key
  ending in `pe` before loading, so the sinusoid is always the constructed one (spec §1.1, unet_3d.py:658-660);
  their shape is still checked.

Files are read lean: safetensors through `safe_open`, reading only the keys asked for; `.pth` through
`torch.load(weights_only=True, mmap=True)`, falling back to a plain `weights_only` load for old non-zip files.
"""
from __future__ import annotations

import re

import torch

from ..checkpoint import SD_UNET_KEY_PATTERN, CheckpointError, musev_key_family
from ..checkpoint import CheckpointFile as SharedCheckpointFile
from .modules import MOTION_MAX_FRAMES, MotionModules, PoseGuider

KINDS = ("denoising_unet", "motion_module", "reference_unet", "pose_guider")

EXPECTED = {
    "denoising_unet": ("MusePose's denoising_unet.pth: the spatial SD1.5 UNet in diffusers layout "
                       "('conv_in.weight', 'down_blocks.0.attentions.0...', 'conv_out.weight'; 686 keys), "
                       "no motion modules"),
    "motion_module": ("MusePose's motion_module.pth: AnimateDiff-style motion modules with 128-frame positional "
                      "encodings in every down, mid and up block ('down_blocks.0.motion_modules.0.temporal_transformer"
                      "...', 'mid_block.motion_modules.0...'; 588 keys)"),
    "reference_unet": ("MusePose's reference_unet.pth: an SD1.5 UNet in diffusers layout without its output head "
                       "(no 'conv_norm_out' / 'conv_out'; 682 keys)"),
    "pose_guider": "MusePose's pose_guider.pth: 'conv_in', 'blocks.0'..'blocks.5', 'conv_out' (16 keys)",
}

_MOTION_KEY = re.compile(r"^((?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(\d+)\.temporal_transformer\.")
_PE_SUFFIX = ".pos_encoder.pe"
_POSE_GUIDER_KEY = re.compile(r"^(conv_in|conv_out|blocks\.\d+)\.(weight|bias)$")


class CheckpointFile(SharedCheckpointFile):
    """A MusePose model file: the pack's lean reader (`musev_core.checkpoint.CheckpointFile`) plus its shapes.

    Reads nothing but names, shapes and dtypes when opened; `tensors` copies only the keys asked for, each checked
    finite (safetensors through `safe_open`; pickles through `torch.load(weights_only=True, mmap=True)`).

    Args:
        path: `.safetensors`, or a pickled `.pth/.pt/.bin/.ckpt` state dict.
    Attributes:
        name: the file name (for messages); shapes: `{key: shape tuple}`.
    Raises:
        CheckpointError: missing, truncated, a pickle that would run code (refused for safety), or not a state
            dict of tensors, naming the file.
    """

    def __init__(self, path: str):
        super().__init__(path)
        self.shapes = {key: tuple(meta.shape) for key, meta in self.meta_state_dict().items()}

    def tensors(self, keys) -> dict[str, torch.Tensor]:
        """`{key: tensor}` on the CPU, as stored, for the given keys only (each checked finite)."""
        return self.read(list(keys))


def describe_keys(shapes: dict[str, tuple]) -> str:
    """What a state dict looks like, in words (for refusals)."""
    keys = list(shapes)
    if not keys:
        return "an empty file"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "a single-file Stable Diffusion checkpoint (keys 'model.diffusion_model...')"
    if any(musev_key_family(k) for k in keys):
        return "a MuseV UNet (temporal layers 'temp_convs' / 'temp_attentions'); load it with 'Load MuseV UNet'"
    motion = [k for k in keys if _MOTION_KEY.match(k)]
    if motion:
        if len(motion) < len(keys):
            return (f"a UNet with motion modules and {len(keys) - len(motion)} spatial keys (a full UNet3D or "
                    f"AnimateDiff-style model, not one of MusePose's split files)")
        pe_lengths = sorted({shapes[k][1] for k in motion if k.endswith(_PE_SUFFIX) and len(shapes[k]) == 3})
        has_mid = any(k.startswith("mid_block.") for k in motion)
        if pe_lengths != [MOTION_MAX_FRAMES] or not has_mid:
            frames = "/".join(str(n) for n in pe_lengths) or "no stored"
            return (f"an AnimateDiff motion module such as mm_sd_v15 ({frames}-frame positional encoding, "
                    f"{'with' if has_mid else 'no'} mid-block module)")
        return "MusePose's motion_module.pth"
    if all(_POSE_GUIDER_KEY.match(k) for k in keys) and "conv_in.weight" in shapes:
        return "MusePose's pose_guider.pth (pose guider keys 'conv_in', 'blocks.N', 'conv_out')"
    if all(SD_UNET_KEY_PATTERN.search(k) for k in keys):
        if not any(k.startswith("up_blocks.") for k in keys):
            return "an SD1.5 UNet encoder without up blocks (a MuseV ReferenceNet)"
        if "conv_out.weight" in shapes:
            return "a full SD1.5 UNet in diffusers layout (like MusePose's denoising_unet.pth)"
        return "an SD1.5 UNet without its output head (like MusePose's reference_unet.pth)"
    if any(k.startswith(("encoder.", "decoder.")) for k in keys):
        return "a VAE"
    if any("vision_model." in k or "text_model." in k for k in keys):
        return "a CLIP model"
    return f"an unknown model ({len(keys)} keys, first: {sorted(keys)[:3]})"


def check_kind(file: CheckpointFile, kind: str) -> None:
    """Refuse a file that is not the MusePose file `kind` (one of `KINDS`).

    Raises:
        CheckpointError: "`<file>` is not <expected>: it looks like <what>".
    """
    shapes = file.shapes
    keys = list(shapes)
    ok = bool(keys)
    if kind == "denoising_unet":
        ok = ok and "conv_out.weight" in shapes and all(SD_UNET_KEY_PATTERN.search(k) for k in keys) \
            and any(k.startswith("up_blocks.") for k in keys)
    elif kind == "reference_unet":
        ok = ok and "conv_out.weight" not in shapes and "conv_norm_out.weight" not in shapes \
            and all(SD_UNET_KEY_PATTERN.search(k) for k in keys) and any(k.startswith("up_blocks.") for k in keys)
    elif kind == "motion_module":
        ok = ok and describe_keys(shapes) == "MusePose's motion_module.pth"
    elif kind == "pose_guider":
        ok = ok and all(_POSE_GUIDER_KEY.match(k) for k in keys) and "conv_in.weight" in shapes \
            and "conv_out.weight" in shapes
    else:
        raise ValueError(f"unknown MusePose file kind {kind!r}, expected one of {KINDS}")
    if not ok:
        raise CheckpointError(f"{file.name} is not {EXPECTED[kind]}: it looks like {describe_keys(shapes)}")


def motion_layout(file: CheckpointFile) -> dict[str, int]:
    """`{prefix: channels}` of every motion module in a checked `motion_module.pth` (from `temporal_transformer.norm`).

    Raises:
        CheckpointError: a module without its GroupNorm weight, or a `pe` buffer of the wrong shape.
    """
    positions = {}
    for key in file.shapes:
        match = _MOTION_KEY.match(key)
        prefix = f"{match.group(1)}.motion_modules.{match.group(2)}"
        if prefix not in positions:
            norm = f"{prefix}.temporal_transformer.norm.weight"
            if norm not in file.shapes:
                raise CheckpointError(f"{file.name} is incomplete: missing '{norm}'")
            positions[prefix] = int(file.shapes[norm][0])
    for key, shape in file.shapes.items():
        if key.endswith(_PE_SUFFIX):
            channels = positions[_MOTION_KEY.match(key).group(0).rsplit(".temporal_transformer.", 1)[0]]
            if shape != (1, MOTION_MAX_FRAMES, channels):
                raise CheckpointError(f"{file.name}: '{key}' has shape {shape}, expected (1, {MOTION_MAX_FRAMES}, "
                                      f"{channels})")
    order = lambda p: ({"down_blocks": 0, "mid_block": 1, "up_blocks": 2}[p.split(".")[0]],
                       [int(x) for x in re.findall(r"\d+", p)])
    return dict(sorted(positions.items(), key=lambda item: order(item[0])))


def _load_strict(module: torch.nn.Module, state_dict: dict, name: str, what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{name}: {what} keys do not match (missing {len(missing)}: {missing[:3]}, "
                              f"unexpected {len(unexpected)}: {unexpected[:3]})")
    for key, tensor in state_dict.items():
        if tuple(expected[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{name}: '{key}' has shape {tuple(tensor.shape)}, expected "
                                  f"{tuple(expected[key].shape)}")
    module.load_state_dict(state_dict, strict=True, assign=expected and next(iter(expected.values())).is_meta)


def load_motion_modules(file: CheckpointFile, operations=torch.nn, attention=None, dtype=None,
                        device=None) -> tuple[MotionModules, dict]:
    """Build and load every motion module of `motion_module.pth`.

    Returns:
        `(MotionModules, info)`; info: `positions`, `keys_loaded`, `pe_keys_ignored` (the stored sinusoids,
        discarded like MusePose does).
    Raises:
        CheckpointError: not a MusePose motion-module file, or missing / misshaped keys.
    """
    check_kind(file, "motion_module")
    positions = motion_layout(file)
    pe_keys = [k for k in file.shapes if k.endswith(_PE_SUFFIX)]
    keys = [k for k in file.shapes if not k.endswith(_PE_SUFFIX)]
    modules = MotionModules(positions, operations=operations, attention=attention, dtype=dtype, device="meta")
    state = {k: v.to(dtype) if dtype is not None else v for k, v in file.tensors(keys).items()}
    _load_strict(modules, state, file.name, "motion module")
    for _prefix, module in modules.named_motion_modules():  # non-persistent buffers stay on meta after assign
        for attention_block in module.temporal_transformer.transformer_blocks[0].attention_blocks:
            encoder = attention_block.pos_encoder
            encoder.pe = type(encoder)(module.channels).pe
    if device is not None:
        modules.to(device)
    return modules, {"positions": positions, "keys_loaded": len(keys), "pe_keys_ignored": len(pe_keys)}


def load_pose_guider(file: CheckpointFile, operations=torch.nn, dtype=None, device=None) -> PoseGuider:
    """Build `PoseGuider` with the geometry of `pose_guider.pth` and load it strictly.

    Raises:
        CheckpointError: not a pose guider file, or missing / misshaped keys.
    """
    check_kind(file, "pose_guider")
    shapes = file.shapes
    blocks = sorted(int(k.split(".")[1]) for k in shapes if k.startswith("blocks.") and k.endswith(".weight"))
    if blocks != list(range(len(blocks))) or len(blocks) % 2:
        raise CheckpointError(f"{file.name}: pose guider blocks {blocks} are not pairs of convs numbered from 0")
    channels = [shapes["conv_in.weight"][0]] + [shapes[f"blocks.{i}.weight"][0] for i in range(1, len(blocks), 2)]
    guider = PoseGuider(int(shapes["conv_out.weight"][0]), tuple(int(c) for c in channels),
                        int(shapes["conv_in.weight"][1]), operations=operations, dtype=dtype, device="meta")
    state = {k: v.to(dtype) if dtype is not None else v for k, v in file.tensors(shapes).items()}
    _load_strict(guider, state, file.name, "pose guider")
    if device is not None:
        guider.to(device)
    return guider


def unet_geometry(file: CheckpointFile) -> dict:
    """SD1.5-shaped UNet geometry read from diffusers key shapes (denoising or reference UNet).

    Returns:
        `{"in_channels", "model_channels", "block_out_channels", "layers_per_block", "attention_levels",
        "context_dim", "transformer_depth", "linear_projection"}`.
    Raises:
        CheckpointError: a key needed to read the geometry is missing.
    """
    shapes = file.shapes

    def count(pattern: str) -> int:
        regex = re.compile(pattern)
        found = {int(m.group(1)) for k in shapes for m in [regex.match(k)] if m}
        return max(found) + 1 if found else 0

    for key in ("conv_in.weight", "down_blocks.0.resnets.0.conv2.weight"):
        if key not in shapes:
            raise CheckpointError(f"{file.name} is incomplete: missing '{key}'")
    model_channels, in_channels = (int(s) for s in shapes["conv_in.weight"][:2])
    levels = count(r"^down_blocks\.(\d+)\.")
    layers = count(r"^down_blocks\.0\.resnets\.(\d+)\.")
    block_out = [int(shapes[f"down_blocks.{i}.resnets.0.conv2.weight"][0]) for i in range(levels)]
    attention_levels, context_dim, linear, depth = [], None, False, 1
    for level in range(levels):
        key = f"down_blocks.{level}.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        if key in shapes:
            attention_levels.append(level)
            context_dim = int(shapes[key][1])
            linear = len(shapes[f"down_blocks.{level}.attentions.0.proj_in.weight"]) == 2
            depth = count(rf"^down_blocks\.{level}\.attentions\.0\.transformer_blocks\.(\d+)\.")
    return {"in_channels": in_channels, "model_channels": model_channels, "block_out_channels": block_out,
            "layers_per_block": layers, "attention_levels": attention_levels, "context_dim": context_dim,
            "transformer_depth": depth, "linear_projection": linear}
