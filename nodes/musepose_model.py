"""ComfyUI adapter: MusePose's denoising UNet as a ComfyUI MODEL, its reference UNet, bank and pose features.

The denoising UNet (`denoising_unet.pth`, diffusers keys) becomes ComfyUI's own SD1.5 `UNetModel` (key conversion
`comfy.utils.unet_to_diffusers`), so attention backends, dtype casting, offloading and LoRA patching are ComfyUI's.
Its model sampling is MusePose's DDIM schedule: v-prediction on zero-terminal-SNR scaled-linear betas (spec §6).
MusePose's own modules enter the MODEL the way MuseV's temporal modules do (DESIGN.md "Two model families, one
mechanism"; all keyed "musepose", no global monkeypatching):
- the 21 motion modules and the pose guider live in their own `ModelPatcher`, registered with
  `set_additional_models`, so ComfyUI loads and offloads them with the UNet;
- a `PatcherInjection` inserts each motion module after its spatial transformer (or after the ResBlock where a
  layer has none) while the MODEL is loaded (`musev_model.locate_slots` finds the places) and removes them before
  ComfyUI patches weights; a `forward_timestep_embed_patch` runs them with the call's window length;
- an `input_block_patch` adds the window's pose features right after conv_in (spec §5.2);
- an `attn1_patch` appends the reference bank's tokens to the keys/values of every spatial self-attention and an
  `attn1` replace patch per block lets only the cond rows see them (spec §4.5, quirk 10.2);
- a `DIFFUSION_MODEL` wrapper works out the frame layout, pose features and bank of each UNet call.
The reference UNet that fills the bank is in `musepose_reference.py`, sampling in `musepose_sampling.py`.

Frame layout of one UNet call: `(b t) c h w`, `b = len(cond_or_uncond)` CFG chunks of `t` window frames each.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.ops
import comfy.patcher_extension
import comfy.supported_models
import comfy.utils

from ..musev_core.checkpoint import CheckpointError
from ..musev_core.musepose.checkpoint import (CheckpointFile, check_kind, load_motion_modules, load_pose_guider,
                                               unet_geometry)
from ..musev_core.musepose.modules import MotionModule, motion_module_positions
from ..musev_core.musepose.schedule import alphas_cumprod
from .musev_model import locate_cross_attentions, locate_slots

KEY = "musepose"
#: transformer_options entry set by the MusePose context handler for each window call.
WINDOW_KEY = "musepose_window"
#: transformer_options entry with the per-call state computed by the DIFFUSION_MODEL wrapper.
CALL_KEY = "musepose_call"
#: MusePose's SD1.5 attention layout: `attention_head_dim=8` used as 8 heads.
HEADS = 8
#: alphas_cumprod[999] is exactly 0 (sigma infinite); ComfyUI needs a finite sigma there. 1e-12 (sigma 1e6) keeps
#: `x0 = sqrt(a) x - sqrt(1 - a) v` within 1e-6 relative of MusePose's `x0 = -v`.
MIN_ALPHA_CUMPROD = 1e-12


# --- typed values -------------------------------------------------------------------------------------------

@dataclass
class MusePoseReference:
    """MusePose's reference self-attention bank (spec §4), the MUSEPOSE_REFERENCE value.

    Attributes:
        features: `{block prefix: (1, h'w', C)}` float16 (MusePose rounds the bank to float16 even in float32
            runs, spec §4.4): the `norm1` output of every spatial transformer block of the reference UNet, cond
            branch only (the uncond branch never reads it), keyed by diffusers block path
            (`down_blocks.0.attentions.0.transformer_blocks.0`).
        latent_hw: `(h, w)` of the reference latent; the video must have the same latent size.
    """

    features: dict[str, torch.Tensor]
    latent_hw: tuple[int, int]

    def __deepcopy__(self, memo):
        return self

    def to(self, device, dtype=None) -> "MusePoseReference":
        """A copy on `device` (optionally cast; float32 holds the float16 values exactly)."""
        return MusePoseReference({k: v.to(device=device, dtype=dtype or v.dtype) for k, v in self.features.items()},
                                 self.latent_hw)


@dataclass
class MusePoseConditioning:
    """What the MusePose context handler gives every window: pose features of the whole video and the bank.

    Attributes:
        pose: `(L, C, h, w)` pose-guider features of every frame (kept where they are, sliced per window), or None.
        bank: `MusePoseReference` or None.
    """

    pose: torch.Tensor | None
    bank: MusePoseReference | None

    def __deepcopy__(self, memo):
        return self

    def to(self, device, dtype=None) -> "MusePoseConditioning":
        """Moves the (small) bank to the sampling device; the pose features stay put and move per window."""
        return MusePoseConditioning(self.pose, None if self.bank is None else self.bank.to(device, dtype))


@dataclass
class MusePoseWindow:
    """One window call (lives in transformer_options while the call runs).

    Attributes:
        frames: indices into the full latent batch; full_length: frames in the batch.
        conditioning: `MusePoseConditioning` (device-side bank), or None.
        skip_motion: run without motion modules (parity checks).
    """

    frames: list[int]
    full_length: int
    conditioning: MusePoseConditioning | None = None
    skip_motion: bool = False


@dataclass
class MusePoseCall:
    """Per-UNet-call state built by the DIFFUSION_MODEL wrapper.

    Attributes:
        num_frames: t, frames per CFG chunk; chunk_codes: ComfyUI's `cond_or_uncond` (0 cond, 1 uncond).
        pose: `(b t) C h w` features added after conv_in, or None.
        bank: `{block prefix: (1, tokens, C)}` in the call's dtype, or None.
        block_names: `{(block kind, block id, index): block prefix}` of the spatial transformer blocks.
        skip_motion: motion modules return their input.
    """

    num_frames: int
    chunk_codes: list[int]
    pose: torch.Tensor | None = None
    bank: dict[str, torch.Tensor] | None = None
    block_names: dict = field(default_factory=dict)
    skip_motion: bool = False


# --- geometry and loading ---------------------------------------------------------------------------------------

def comfy_unet_config(geometry: dict, dtype=None) -> dict:
    """ComfyUI `UNetModel` kwargs for an SD1.5-shaped diffusers geometry (`checkpoint.unet_geometry`)."""
    levels = len(geometry["block_out_channels"])
    layers = geometry["layers_per_block"]
    attention = set(geometry["attention_levels"])
    depth = geometry["transformer_depth"]
    return {
        "use_checkpoint": False, "image_size": 32, "in_channels": geometry["in_channels"],
        "out_channels": geometry["in_channels"], "model_channels": geometry["model_channels"],
        "num_res_blocks": [layers] * levels,
        "channel_mult": [c // geometry["model_channels"] for c in geometry["block_out_channels"]],
        "transformer_depth": [depth if lvl in attention else 0 for lvl in range(levels) for _ in range(layers)],
        "transformer_depth_output": [depth if lvl in attention else 0 for lvl in range(levels)
                                     for _ in range(layers + 1)],
        "transformer_depth_middle": depth, "use_spatial_transformer": True, "legacy": False,
        "context_dim": geometry["context_dim"], "num_heads": HEADS, "num_head_channels": -1,
        "use_linear_in_transformer": geometry["linear_projection"], "adm_in_channels": None,
        "use_temporal_resblock": False, "use_temporal_attention": False, "dtype": dtype,
    }


def _convert_keys(file: CheckpointFile, config: dict, expected: dict, what: str) -> dict:
    """Map the file's diffusers keys onto ComfyUI's UNet keys, checking every key and shape both ways.

    Raises:
        CheckpointError: keys of the file with no place in the UNet, UNet keys the file lacks, or wrong shapes.
    """
    mapping = comfy.utils.unet_to_diffusers(config)
    names = {d: c for d, c in mapping.items() if c in expected}
    unused = sorted(set(file.shapes) - set(names))
    missing = sorted(set(expected) - {names[k] for k in file.shapes if k in names})
    if unused or missing:
        raise CheckpointError(f"{file.name}: its keys do not make a {what} (keys without a place: {len(unused)} "
                              f"{unused[:3]}, UNet keys missing: {len(missing)} {missing[:3]})")
    for key, shape in file.shapes.items():
        if tuple(expected[names[key]].shape) != tuple(shape):
            raise CheckpointError(f"{file.name}: '{key}' has shape {tuple(shape)}, expected "
                                  f"{tuple(expected[names[key]].shape)}")
    return {names[k]: v for k, v in file.tensors(file.shapes).items()}


def _set_group_norm_groups(module: nn.Module, groups: int) -> None:
    """Give the UNet's own GroupNorms `groups` groups (ComfyUI builds 32; only non-SD test geometries differ)."""
    if groups == 32:
        return
    for sub in module.modules():
        if isinstance(sub, nn.GroupNorm):
            if sub.num_channels % groups:
                raise CheckpointError(f"GroupNorm of {sub.num_channels} channels cannot have {groups} groups")
            sub.num_groups = groups


class MusePoseModelSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION):
    """MusePose's schedule (inference_v2.yaml): v-prediction, scaled-linear betas rescaled to zero terminal SNR.

    The sigma table is `sqrt((1 - a) / a)` of diffusers' float32 `alphas_cumprod` (spec §6), with the terminal
    `a = 0` raised to `MIN_ALPHA_CUMPROD` so sigma_max is finite. `musepose_alphas` keeps the exact table for the
    MusePose DDIM sampler.
    """

    def __init__(self, model_config=None):
        super().__init__(model_config)
        exact = alphas_cumprod()
        self.musepose_alphas = exact
        clamped = exact.clamp(min=MIN_ALPHA_CUMPROD)
        self.set_sigmas(((1 - clamped) / clamped) ** 0.5)


def _operations(dtype, manual_cast):
    return comfy.ops.manual_cast if manual_cast is not None else comfy.ops.disable_weight_init


def _comfy_attention(q, k, v, heads, **kwargs):
    """The motion modules' attention: ComfyUI's current backend (chosen at call time)."""
    return comfy_attention.optimized_attention(q, k, v, heads)


class MusePoseModules(nn.Module):
    """The motion modules and the pose guider of one MusePose MODEL (one additional model for ComfyUI)."""

    def __init__(self, motion, pose_guider):
        super().__init__()
        self.motion = motion
        self.pose_guider = pose_guider


def load_denoising_model(unet_path: str, motion_path: str, pose_guider_path: str, norm_num_groups: int = 32):
    """Build the MusePose MODEL from the three denoising-side files.

    Args:
        unet_path: `denoising_unet.pth` (spatial SD1.5 UNet, diffusers keys; all 686 consumed).
        motion_path: `motion_module.pth` (546 weights consumed; the 42 stored `pe` sinusoids ignored on purpose).
        pose_guider_path: `pose_guider.pth` (16 keys consumed).
        norm_num_groups: GroupNorm groups of the UNet (32 for every released model; tiny test geometries differ).
    Returns:
        `(ModelPatcher, info)`: the MODEL with MusePose applied; info counts the consumed / ignored keys.
    Raises:
        CheckpointError: a wrong, truncated or misshaped file, naming it and what was expected.
    """
    unet_file, motion_file, guider_file = (CheckpointFile(p) for p in (unet_path, motion_path, pose_guider_path))
    check_kind(unet_file, "denoising_unet")
    check_kind(motion_file, "motion_module")
    check_kind(guider_file, "pose_guider")
    geometry = unet_geometry(unet_file)
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    params = sum(int(torch.Size(s).numel()) for s in unet_file.shapes.values())
    weight_dtype = unet_file.tensors(["conv_in.weight"])["conv_in.weight"].dtype
    model_config = comfy.supported_models.SD15(comfy_unet_config(geometry))
    dtype = comfy.model_management.unet_dtype(model_params=params, weight_dtype=weight_dtype,
                                              supported_dtypes=model_config.supported_inference_dtypes)
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = comfy.model_base.BaseModel(model_config, model_type=comfy.model_base.ModelType.V_PREDICTION,
                                       device=offload_device)
    model.model_sampling = MusePoseModelSampling(model_config)
    unet = model.diffusion_model
    expected = unet.state_dict()
    state = _convert_keys(unet_file, model_config.unet_config, expected, "SD1.5 denoising UNet")
    unet.load_state_dict(state, strict=True)
    del state
    _set_group_norm_groups(unet, norm_num_groups)
    unet.eval().requires_grad_(False)

    compute = manual_cast or dtype
    operations = _operations(dtype, manual_cast)
    motion, motion_info = load_motion_modules(motion_file, operations=operations, attention=_comfy_attention,
                                              dtype=dtype)
    wanted = motion_module_positions(geometry["block_out_channels"], geometry["layers_per_block"])
    if motion_info["positions"] != wanted:
        raise CheckpointError(f"{motion_file.name} does not fit {unet_file.name}: its motion modules "
                              f"{_summary(motion_info['positions'])} differ from the UNet's {_summary(wanted)}")
    guider = load_pose_guider(guider_file, operations=operations, dtype=dtype)
    if guider.conv_out.out_channels != geometry["model_channels"]:
        raise CheckpointError(f"{guider_file.name} gives {guider.conv_out.out_channels}-channel features, "
                              f"{unet_file.name} has {geometry['model_channels']} channels after conv_in")
    modules = MusePoseModules(motion, guider).to(offload_device).eval().requires_grad_(False)
    modules.compute_dtype = compute
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    modules_patcher = comfy.model_patcher.ModelPatcher(modules, load_device=load_device,
                                                       offload_device=offload_device)
    info = {"unet_keys": len(unet_file.shapes), "motion_keys": motion_info["keys_loaded"],
            "motion_pe_keys_ignored": motion_info["pe_keys_ignored"], "pose_guider_keys": len(guider_file.shapes),
            "motion_modules": len(motion_info["positions"]), "geometry": geometry}
    return apply_musepose(patcher, modules_patcher), info


def _summary(positions: dict) -> str:
    return f"({len(positions)} modules, channels {sorted(set(positions.values()))})"


def block_names(unet) -> dict:
    """`{(block kind, block id, index): diffusers block prefix}` of every spatial transformer block."""
    return {(block[0], block[1], index): prefix[:-len(".attn2")]
            for prefix, (block, index) in locate_cross_attentions(unet).items()}


def motion_slots(unet) -> dict:
    """Where each MusePose motion module goes: `{prefix: (container, anchor, channels)}`.

    After the spatial transformer of a layer, or after its ResBlock where it has none (spec §5.2); uses the slot
    finder of MuseV's injection (`musev_model.locate_slots`).
    """
    slots = locate_slots(unet)
    found = {}
    for prefix in slots:
        for family in ("temp_convs", "temp_attentions"):
            if f".{family}." in prefix:
                level, layer = prefix.split(f".{family}.")
                attention = slots.get(f"{level}.temp_attentions.{layer}")
                found[f"{level}.motion_modules.{layer}"] = attention or slots[prefix]
    return found


# --- injection, patches and the call wrapper -----------------------------------------------------------------

def _modules_of(model_patcher) -> MusePoseModules | None:
    patchers = model_patcher.get_additional_models_with_key(KEY)
    return patchers[0].model if patchers else None


def _remove_motion_modules(unet) -> None:
    for container in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]:
        for index in reversed(range(len(container))):
            if isinstance(container[index], MotionModule):
                del container[index]


def _inject(model_patcher) -> None:
    modules = _modules_of(model_patcher)
    if modules is None:
        return
    unet = model_patcher.model.diffusion_model
    _remove_motion_modules(unet)
    slots = motion_slots(unet)
    for prefix, module in modules.motion.named_motion_modules():
        container, anchor, _ = slots[prefix]
        position = [i for i, m in enumerate(container) if m is anchor][0]
        container.insert(position + 1, module)


def _eject(model_patcher) -> None:
    _remove_motion_modules(model_patcher.model.diffusion_model)


def _motion_handler(layer, x, emb, context, transformer_options, *args, **kwargs):
    """forward_timestep_embed handler of the inserted motion modules."""
    call: MusePoseCall | None = transformer_options.get(CALL_KEY)
    if call is None or call.skip_motion:
        return x
    return layer(x, call.num_frames)


def _add_pose(h, transformer_options):
    """input_block_patch: the pose features join the UNet right after conv_in (before skip feature 0)."""
    call: MusePoseCall | None = transformer_options.get(CALL_KEY)
    if call is None or call.pose is None or transformer_options.get("block") != ("input", 0):
        return h
    return h + call.pose.to(h.dtype)


def _bank_tokens(n, context_attn1, value_attn1, extra_options):
    """attn1_patch: append this block's reference tokens to the keys/values of its self-attention (all rows;
    `_BankAttention` keeps them away from the uncond rows)."""
    call: MusePoseCall | None = extra_options.get(CALL_KEY)
    block = extra_options.get("block")
    if call is None or not call.bank or block is None:
        return n, context_attn1, value_attn1
    name = call.block_names.get((block[0], block[1], extra_options.get("block_index", 0)))
    ref = call.bank.get(name)
    if ref is None:
        return n, context_attn1, value_attn1
    ref = ref.to(device=n.device, dtype=n.dtype).expand(n.shape[0], -1, -1)
    same = value_attn1 is context_attn1
    context_attn1 = torch.cat([context_attn1, ref], dim=1)
    value_attn1 = context_attn1 if same else torch.cat([value_attn1, ref], dim=1)
    return n, context_attn1, value_attn1


class _BankAttention:
    """attn1 replace patch: the cond rows attend to `[own tokens ; reference tokens]`, the uncond rows to their own
    tokens only (MusePose recomputes the uncond half as plain self-attention, spec §4.5 step 4)."""

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")
        attention = comfy_attention.optimized_attention
        tokens = q.shape[1]
        call: MusePoseCall | None = extra_options.get(CALL_KEY)
        if k.shape[1] == tokens or call is None or 1 not in call.chunk_codes:
            return attention(q, k, v, heads, attn_precision=precision)
        t = call.num_frames
        outs = []
        for i, code in enumerate(call.chunk_codes):
            rows = slice(i * t, (i + 1) * t)
            keep = k.shape[1] if code == 0 else tokens
            outs.append(attention(q[rows], k[rows, :keep], v[rows, :keep], heads, attn_precision=precision))
        return torch.cat(outs)


class _DiffusionModelWrapper:
    """DIFFUSION_MODEL wrapper: the call's window length, pose features and bank, then the UNet."""

    def __init__(self, names: dict):
        self.names = names

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, x, timesteps=None, context=None, y=None, control=None, transformer_options={},
                 **kwargs):
        codes = list(transformer_options.get("cond_or_uncond", [0]))
        chunks = max(1, len(codes))
        if x.shape[0] % chunks:
            raise ValueError(f"MusePose: batch of {x.shape[0]} frames does not split into {chunks} CFG chunks")
        num_frames = x.shape[0] // chunks
        call = MusePoseCall(num_frames, codes, block_names=self.names)
        window: MusePoseWindow | None = transformer_options.get(WINDOW_KEY)
        if window is not None:
            call.skip_motion = window.skip_motion
            conditioning = window.conditioning
            if conditioning is not None and conditioning.pose is not None:
                pose = conditioning.pose[window.frames].to(device=x.device, dtype=x.dtype)
                call.pose = pose.repeat(chunks, 1, 1, 1)  # both CFG halves get the same pose (spec §7.3)
            if conditioning is not None and conditioning.bank is not None:
                call.bank = conditioning.bank.features
        options = dict(transformer_options)
        options[CALL_KEY] = call
        return executor(x, timesteps, context, y, control, options, **kwargs)


def apply_musepose(model_patcher, modules_patcher):
    """Return a clone of `model_patcher` running MusePose's motion modules, pose features and bank attention."""
    patched = model_patcher.clone()
    patched.set_additional_models(KEY, [modules_patcher])
    patched.set_injections(KEY, [comfy.patcher_extension.PatcherInjection(inject=_inject, eject=_eject)])
    names = block_names(model_patcher.model.diffusion_model)
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY,
                                 _DiffusionModelWrapper(names))
    options = patched.model_options["transformer_options"]
    patches = options.setdefault("patches", {})
    patches["forward_timestep_embed_patch"] = [p for p in patches.get("forward_timestep_embed_patch", [])
                                               if p[0] is not MotionModule] + [(MotionModule, _motion_handler)]
    patches["input_block_patch"] = [p for p in patches.get("input_block_patch", []) if p is not _add_pose]
    patches["input_block_patch"].append(_add_pose)
    patches["attn1_patch"] = [p for p in patches.get("attn1_patch", []) if p is not _bank_tokens]
    patches["attn1_patch"].append(_bank_tokens)
    replace = options.setdefault("patches_replace", {})
    attn1 = dict(replace.get("attn1", {}))
    bank_attention = _BankAttention()
    for key in names:
        attn1[key] = bank_attention
    replace["attn1"] = attn1
    return patched


def is_musepose_model(model_patcher) -> bool:
    """Whether this MODEL was built by 'Load MusePose'."""
    return _modules_of(model_patcher) is not None


def pose_features(model_patcher, pose: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Run the MODEL's pose guider once on every pose frame (MusePose does it once per video, spec §2.4).

    Args:
        pose: `L H W 3` IMAGE in [0, 1] (not normalised, as MusePose feeds it), H and W the video size.
    Returns:
        `(L, C, H/8, W/8)` features in the UNet's compute dtype on ComfyUI's intermediate device.
    Raises:
        ValueError: the MODEL is not a MusePose MODEL.
    """
    modules_patchers = model_patcher.get_additional_models_with_key(KEY)
    if not modules_patchers:
        raise ValueError("this MODEL is not a MusePose MODEL: load it with 'Load MusePose'")
    comfy.model_management.load_models_gpu([modules_patchers[0]])
    modules = modules_patchers[0].model
    device = modules_patchers[0].load_device
    out = []
    with torch.no_grad():
        for start in range(0, pose.shape[0], batch):
            comfy.model_management.throw_exception_if_processing_interrupted()
            frames = pose[start:start + batch].movedim(-1, 1).to(device=device, dtype=modules.compute_dtype)
            out.append(modules.pose_guider(frames).to(comfy.model_management.intermediate_device()))
    return torch.cat(out)


def unet_call(model_patcher, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
              chunk_codes: list[int], window: MusePoseWindow | None = None) -> torch.Tensor:
    """One call of the MusePose MODEL's UNet outside a sampler (parity tests, benchmarks).

    Args:
        x: `(b t) 4 h w` UNet input (MusePose's latents: no input scaling); timesteps: `(b t)` timesteps.
        context: `(b t) 1 dim` CLIP image-embedding context; chunk_codes: `cond_or_uncond` of the b chunks.
        window: frames, conditioning (pose features, bank) and skip_motion, or None.
    Returns:
        `(b t) 4 h w` raw UNet output (v-prediction).
    """
    comfy.model_management.load_models_gpu([model_patcher])
    options = comfy.patcher_extension.copy_nested_dicts(model_patcher.model_options.get("transformer_options", {}))
    options["wrappers"] = comfy.patcher_extension.copy_nested_dicts(model_patcher.wrappers)
    options["cond_or_uncond"] = list(chunk_codes)
    if window is not None:
        options[WINDOW_KEY] = window
    with torch.no_grad():
        return model_patcher.model.diffusion_model(x, timesteps=timesteps, context=context,
                                                   transformer_options=options)
