"""ComfyUI adapter: MuseV's temporal modules inside the user's SD1.5 MODEL.

How the pieces enter the MODEL (all keyed "musev", no global monkeypatching; spec/comfyui.md §2.4):
- the temporal modules live in their own `ModelPatcher`, registered with `set_additional_models`, so ComfyUI loads
  and offloads them together with the UNet;
- a `PatcherInjection` inserts each module right after its anchor layer of the UNet's `TimestepEmbedSequential`
  lists while the MODEL is loaded (temporal conv after every ResBlock, temporal attention after every spatial
  transformer, `transformer_in` after conv_in) and removes them again before ComfyUI patches weights (LoRA);
  while injected, the spatial transformer blocks also run with MuseV's LayerNorm eps (musev_core/temporal.py);
- `forward_timestep_embed_patch` entries let the inserted modules read the frame layout of the call;
- an `attn1_patch` adds the condition frames' tokens to every spatial self-attention (reference-only attention);
  where MuseV's are the only attn1 patches, `attn1` replace patches append the condition frames' already projected
  keys/values instead, so those tokens are not projected again for every frame;
- an `attn2_patch`/`attn2_output_patch` pair lets each spatial cross-attention project the text once per CFG chunk
  instead of once per frame, when all frames of a chunk share one prompt and no other pack patches attn2;
- a `DIFFUSION_MODEL` wrapper works out the frame layout of each UNet call and its frame embedding.
For the `musev_referencenet` flavour also (spec/musev.md §1.5, §2.3, §3):
- the 13 reference-fusion attentions are appended to conv_in, every down-block layer and downsampler, and the mid
  block (injected like the temporal modules, run by the same forward_timestep_embed_patch mechanism);
- an `emb_patch` gives the condition frames a zero time embedding;
- `attn2` replace patches on the 16 spatial cross-attentions add the IP-Adapter attention to the text attention
  (other packs' patches on the same cross-attentions, e.g. IPAdapter_plus, keep running inside them).
For every flavour the UNet and ControlNets get the exact, fractional timestep of each sigma (nodes/timesteps.py),
and a MODEL set up for core MultiGPU is refused (nodes/multigpu.py).

Frame layout of one UNet call: the batch is `(b t)`, `b = len(cond_or_uncond)` CFG chunks of `t` frames each;
inside a MuseV window the condition frame(s) come first (`MuseVWindow.condition_index`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
from comfy.ldm.modules.attention import BasicTransformerBlock, SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, Upsample

import comfy.ldm.modules.attention as comfy_attention

from ..musev_core.checkpoint import CheckpointError
from ..musev_core.motion_module import MID_FEATURE, MuseVMotionModule, build_motion_module
from ..musev_core.reference import IPTokens, ReferenceFeatures, ReferenceFusionAttention
from ..musev_core.reference_attention import reference_only_context
from ..musev_core.temporal import MUSEV_BLOCK_NORM_EPS, TemporalConvLayer, TemporalTransformer
from .multigpu import refuse_multigpu
from .timesteps import use_continuous_timesteps

KEY = "musev"
#: transformer_options entry set by the context handler for each window call.
WINDOW_KEY = "musev_window"
#: transformer_options entry with the per-call state computed by the DIFFUSION_MODEL wrapper.
CALL_KEY = "musev_call"
#: MuseV's default motion_speed (text2video.py `--motion_speed`); only the referencenet flavour uses it.
DEFAULT_MOTION_SPEED = 8.0


@dataclass
class MuseVWindow:
    """What the context handler tells the UNet about one window call (small: lives in transformer_options).

    Attributes:
        condition_index: positions of the clean condition frame(s) inside the call (e.g. `[0]`), empty if none.
        frames: the call's frame indices into the full latent batch (condition frames first).
        full_length: frames in the full latent batch (condition + generated).
        motion_speed: frame-position multiplier of the referencenet flavour.
        skip_temporal: run the UNet as MuseV's text-to-image pass (temporal layers return their input).
        reference: ReferenceNet features fused into every window (referencenet flavour), or None.
        ip_tokens: IP-Adapter tokens for the spatial cross-attentions (referencenet flavour), or None.
    """

    condition_index: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    full_length: int = 0
    motion_speed: float = DEFAULT_MOTION_SPEED
    skip_temporal: bool = False
    reference: ReferenceFeatures | None = None
    ip_tokens: IPTokens | None = None


@dataclass
class MuseVCall:
    """Per-UNet-call state built by the DIFFUSION_MODEL wrapper.

    Attributes:
        num_frames: t, frames per CFG chunk (the batch is `(b t)`).
        femb: `(t, femb_channels)` frame embedding, or None when temporal layers are skipped.
        condition_index: positions of the clean condition frame(s) inside each chunk.
        skip_temporal: temporal layers return their input.
        zero_condition_temb: give condition frames a zero time embedding (referencenet flavour).
        reference: 13 ReferenceNet features `b c t2 h w` in chunk order (12 down + mid), or None.
        ip_tokens: `(b t) n dim` IP tokens, or None; ip_scale their weight.
        motion: the motion module (for the IP-Adapter K/V of each cross-attention).
        attn2_patches: the call's `attn2` replace patches (other packs' block-level ones run inside MuseV's).
        shared_text: every frame of each CFG chunk has the same text context and MuseV's are the only attn2
            patches, so the spatial cross-attentions may run once per chunk (`_shared_text_attn2`).
        attn1_patches: the call's `attn1` replace patches.
        reference_after_projection: MuseV's is the only attn1_patch, so blocks whose attn1 replace patch is
            MuseV's append the condition frames' keys/values after projection (`_ReferenceOnlyAttention1`).
    """

    num_frames: int
    femb: torch.Tensor | None
    condition_index: list[int]
    skip_temporal: bool
    zero_condition_temb: bool = False
    reference: list[torch.Tensor] | None = None
    ip_tokens: torch.Tensor | None = None
    ip_scale: float = 1.0
    motion: MuseVMotionModule | None = None
    attn2_patches: dict | None = None
    shared_text: bool = False
    attn1_patches: dict | None = None
    reference_after_projection: bool = False


def locate_slots(unet) -> dict[str, tuple[torch.nn.Sequential, torch.nn.Module, int]]:
    """Where each MuseV temporal module goes in a ComfyUI `UNetModel`.

    Walks `input_blocks`, `middle_block` and `output_blocks` and names each slot like the diffusers key prefix of
    the module that belongs there (`down_blocks.{level}.temp_convs.{layer}`, `mid_block.temp_attentions.0`,
    `up_blocks.{level}.temp_attentions.{layer}`, `transformer_in`).

    Reference-fusion slots (`first_refer_emb_attns`, `down_blocks.{level}.refer_emb_attns.{position}`,
    `mid_block_refer_emb_attns`) have anchor None: they go at the END of their container, after the temporal
    modules (MuseV fuses each layer's and downsampler's final output).

    Returns:
        `{prefix: (container, anchor, channels)}`: insert after `anchor` in `container`; `channels` is the width
        the module must have.
    """
    slots = {}
    conv_in = unet.input_blocks[0]
    slots["transformer_in"] = (conv_in, list(conv_in)[-1], unet.model_channels)
    slots["first_refer_emb_attns"] = (conv_in, None, unet.model_channels)

    def add_layer(prefix: str, container, layer: int):
        children = list(container)
        resblocks = [m for m in children if isinstance(m, ResBlock)]
        transformers = [m for m in children if isinstance(m, SpatialTransformer)]
        if resblocks:
            slots[f"{prefix}.temp_convs.{layer}"] = (container, resblocks[0], resblocks[0].out_channels)
        if transformers:
            slots[f"{prefix}.temp_attentions.{layer}"] = (container, transformers[0], transformers[0].in_channels)

    level, layer = 0, 0
    for block in list(unet.input_blocks)[1:]:
        children = list(block)
        downsample = [m for m in children if isinstance(m, Downsample)]
        if downsample:
            slots[f"down_blocks.{level}.refer_emb_attns.{layer}"] = (block, None, downsample[0].out_channels)
            level, layer = level + 1, 0
            continue
        add_layer(f"down_blocks.{level}", block, layer)
        resblocks = [m for m in children if isinstance(m, ResBlock)]
        if resblocks:
            slots[f"down_blocks.{level}.refer_emb_attns.{layer}"] = (block, None, resblocks[0].out_channels)
        layer += 1

    mid = list(unet.middle_block)
    mid_res = [m for m in mid if isinstance(m, ResBlock)]
    mid_tr = [m for m in mid if isinstance(m, SpatialTransformer)]
    for i, res in enumerate(mid_res):
        slots[f"mid_block.temp_convs.{i}"] = (unet.middle_block, res, res.out_channels)
    for i, tr in enumerate(mid_tr):
        slots[f"mid_block.temp_attentions.{i}"] = (unet.middle_block, tr, tr.in_channels)
    if mid_res:
        slots["mid_block_refer_emb_attns"] = (unet.middle_block, None, mid_res[-1].out_channels)

    level, layer = 0, 0
    for block in unet.output_blocks:
        add_layer(f"up_blocks.{level}", block, layer)
        layer += 1
        if any(isinstance(m, Upsample) for m in block):
            level, layer = level + 1, 0
    return slots


def locate_cross_attentions(unet) -> dict[str, tuple[tuple[str, int], int]]:
    """ComfyUI patch keys of the spatial transformer blocks, by diffusers prefix.

    Returns:
        `{"down_blocks.0.attentions.0.transformer_blocks.0.attn2": (("input", 1), 0), ...}`: the block
        (`transformer_options["block"]`) and the transformer index inside it, i.e. the key ComfyUI's `attn2`
        replace patches use is `(block[0], block[1], index)`.
    """
    found = {}

    def add(prefix: str, block_key: tuple[str, int], container):
        for module in container:
            if isinstance(module, SpatialTransformer):
                for index in range(len(module.transformer_blocks)):
                    found[f"{prefix}.transformer_blocks.{index}.attn2"] = (block_key, index)

    level, layer = 0, 0
    for block_id, block in enumerate(unet.input_blocks):
        if block_id == 0:
            continue
        if any(isinstance(m, Downsample) for m in block):
            level, layer = level + 1, 0
            continue
        add(f"down_blocks.{level}.attentions.{layer}", ("input", block_id), block)
        layer += 1
    add("mid_block.attentions.0", ("middle", 0), unet.middle_block)
    level, layer = 0, 0
    for block_id, block in enumerate(unet.output_blocks):
        add(f"up_blocks.{level}.attentions.{layer}", ("output", block_id), block)
        layer += 1
        if any(isinstance(m, Upsample) for m in block):
            level, layer = level + 1, 0
    return found


def _fusion_width(module: ReferenceFusionAttention) -> int:
    return module.to_q.weight.shape[0]


def check_fits(motion: MuseVMotionModule, unet, name: str) -> None:
    """Refuse a motion checkpoint whose temporal modules do not fit the MODEL's UNet.

    Raises:
        CheckpointError: naming the first mismatching position, with expected and found channels.
    """
    slots = {k: v for k, v in locate_slots(unet).items() if v[1] is not None}
    modules = dict(motion.named_temporal_modules())
    if motion.transformer_in is None:
        slots.pop("transformer_in", None)
    missing = sorted(set(slots) - set(modules))
    extra = sorted(set(modules) - set(slots))
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"the UNet has {len(missing)} temporal position(s) the checkpoint has no module for "
                            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if extra:
            problems.append(f"the checkpoint has {len(extra)} module(s) the UNet has no place for "
                            f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
        raise CheckpointError(
            f"{name} does not fit this MODEL: {' and '.join(problems)}. MuseV needs an SD1.5 MODEL "
            f"(4 levels, 2 layers each, attention in the first 3 levels)")
    for prefix, module in modules.items():
        channels = slots[prefix][2]
        width = module.norm.num_channels if isinstance(module, TemporalTransformer) else module.conv1[0].num_channels
        if width != channels:
            raise CheckpointError(f"{name} does not fit this MODEL: '{prefix}' has {width} channels, "
                                  f"the UNet has {channels} there (is the MODEL an SD1.5 checkpoint?)")
    all_slots = locate_slots(unet)
    for prefix, module, _feature in motion.reference_fusions():
        if prefix not in all_slots or all_slots[prefix][2] != _fusion_width(module):
            where = all_slots[prefix][2] if prefix in all_slots else "no such position"
            raise CheckpointError(f"{name} does not fit this MODEL: reference fusion '{prefix}' has "
                                  f"{_fusion_width(module)} channels, the UNet has {where}")
    attentions = locate_cross_attentions(unet)
    for prefix, _kv in motion.ip_adapter_kvs():
        if prefix not in attentions:
            raise CheckpointError(f"{name} does not fit this MODEL: IP-Adapter attention '{prefix}' has no spatial "
                                  f"cross-attention in the UNet")


def _remove_musev_modules(unet) -> None:
    for container in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]:
        for index in reversed(range(len(container))):
            if isinstance(container[index], (TemporalConvLayer, TemporalTransformer, ReferenceFusionAttention)):
                del container[index]


_SAVED_EPS = "_musev_saved_eps"
#: attribute of an injected fusion attention naming the ReferenceNet feature it reads
FEATURE_ATTR = "musev_reference_feature"


def _set_spatial_norm_eps(unet) -> None:
    """Run the MODEL's spatial transformer blocks with MuseV's LayerNorm eps (norm1/norm3 = 0, see temporal.py).

    The original eps is kept on the LayerNorm and put back by `_restore_spatial_norm_eps`.
    """
    for block in unet.modules():
        if isinstance(block, BasicTransformerBlock):
            for norm in (block.norm1, block.norm3):
                if not hasattr(norm, _SAVED_EPS):
                    setattr(norm, _SAVED_EPS, norm.eps)
                norm.eps = MUSEV_BLOCK_NORM_EPS


def _restore_spatial_norm_eps(unet) -> None:
    for module in unet.modules():
        if hasattr(module, _SAVED_EPS):
            module.eps = getattr(module, _SAVED_EPS)
            delattr(module, _SAVED_EPS)


def _motion_of(model_patcher) -> MuseVMotionModule | None:
    patchers = model_patcher.get_additional_models_with_key(KEY)
    return patchers[0].model if patchers else None


def _inject(model_patcher) -> None:
    motion = _motion_of(model_patcher)
    if motion is None:
        return
    unet = model_patcher.model.diffusion_model
    _remove_musev_modules(unet)
    slots = locate_slots(unet)
    for prefix, module in motion.named_temporal_modules():
        container, anchor, _ = slots[prefix]
        position = [i for i, m in enumerate(container) if m is anchor][0]
        container.insert(position + 1, module)
    for prefix, module, _feature in motion.reference_fusions():
        slots[prefix][0].append(module)
    _set_spatial_norm_eps(unet)


def _eject(model_patcher) -> None:
    unet = model_patcher.model.diffusion_model
    _remove_musev_modules(unet)
    _restore_spatial_norm_eps(unet)


def _temporal_layer_handler(layer, x, emb, context, transformer_options, *args, **kwargs):
    """forward_timestep_embed handler for the inserted temporal modules."""
    call: MuseVCall | None = transformer_options.get(CALL_KEY)
    if call is None or call.skip_temporal:
        return x
    if isinstance(layer, TemporalTransformer):
        return layer(x, call.femb, call.num_frames)
    return layer(x, call.num_frames)


def _reference_fusion_handler(layer, x, emb, context, transformer_options, *args, **kwargs):
    """forward_timestep_embed handler for the inserted reference-fusion attentions."""
    call: MuseVCall | None = transformer_options.get(CALL_KEY)
    if call is None or call.reference is None:
        return x
    feature = getattr(layer, FEATURE_ATTR)
    reference = call.reference[-1] if feature == MID_FEATURE else call.reference[feature]
    return layer(x, reference, call.num_frames)


def _zero_condition_temb(emb, model_channels, transformer_options):
    """emb_patch: the referencenet flavour gives condition frames a zero time embedding.

    MuseV zeroes the rows after its top-level SiLU and skips the ResBlocks' own SiLU; ComfyUI's ResBlocks apply
    SiLU first, and SiLU(0) = 0, so zeroing the rows here is the same (spec/musev.md §1.5).
    """
    call: MuseVCall | None = transformer_options.get(CALL_KEY)
    if call is None or not call.zero_condition_temb or not call.condition_index or call.num_frames < 2:
        return emb
    rows = [chunk * call.num_frames + i for chunk in range(emb.shape[0] // call.num_frames)
            for i in call.condition_index]
    emb = emb.clone()
    emb[rows] = 0
    return emb


def _spatial_attention(q, k, v, extra_options):
    """ComfyUI's optimized attention as its CrossAttention would call it inside a replace patch.

    An `optimized_attention_override` in the transformer options (newer ComfyUI; nodes that swap the attention
    kernel) is honoured by passing the options along, which only ComfyUI versions that have overrides read.
    """
    kwargs = {"attn_precision": extra_options.get("attn_precision")}
    if "optimized_attention_override" in extra_options:
        kwargs["transformer_options"] = extra_options
    return comfy_attention.optimized_attention(q, k, v, extra_options["n_heads"], **kwargs)


def _block_key_patch(replace: dict | None, extra_options, own):
    """Another pack's replace patch on this block's `(block, id)` key, or None.

    ComfyUI ranks that key below MuseV's `(block, id, index)` one, so MuseV's patch runs it in its own place.
    """
    block = extra_options.get("block")
    patch = replace.get(tuple(block)) if replace and block is not None else None
    return patch if patch is not None and patch is not own else None


class _IPAdapterAttention2:
    """`attn2` replace patch: text attention plus MuseV's decoupled IP-Adapter attention (spec/musev.md §3).

    Coexists with other packs' patches on the same cross-attention (ComfyUI_IPAdapter_plus's `Attn2Replace`
    protocol): their terms and MuseV's add up in the one attention output.
    - `inner`: a replace patch another pack had put on this `(block, id, index)` key before MuseV was applied; it
      computes the text attention (plus its own terms) in place of ComfyUI's attention.
    - a patch on the block's 2-tuple key `(block, id)` (IPAdapter_plus on SD1.5, applied before or after MuseV):
      ComfyUI's lookup prefers MuseV's 3-tuple key, so this patch calls it the same way at run time (the
      DIFFUSION_MODEL wrapper hands the call's `attn2` replace dict over in `MuseVCall.attn2_patches`).
    - `add(callback, **kwargs)`: a pack that meets MuseV's object on its own key adds a term the way
      `Attn2Replace.add` does: `callback(out, q, k, v, extra_options, **kwargs)` is added while the step's sigma is
      within `[sigma_end, sigma_start]` (forwarded to `inner` when that has `add`).
    The MuseV term's K/V projections come from the motion module of the call; besides those the patch holds only
    the diffusers prefix of its cross-attention and the other packs' objects.
    """

    def __init__(self, prefix: str, inner=None, added=None):
        self.prefix = prefix
        self.inner = inner
        self.added = list(added or [])

    def add(self, callback, **kwargs):
        """One more additive attention term (ComfyUI_IPAdapter_plus `Attn2Replace.add` protocol)."""
        if self.inner is not None and hasattr(self.inner, "add"):
            self.inner.add(callback, **kwargs)
        else:
            self.added.append((callback, kwargs))

    def to(self, device, *args, **kwargs):
        """ComfyUI's `model_patches_to`: moves the other pack's patch along (MuseV's own term holds no tensors)."""
        if self.inner is not None and hasattr(self.inner, "to"):
            self.inner = self.inner.to(device, *args, **kwargs)
        return self

    def _base(self, call: MuseVCall | None, extra_options):
        if self.inner is not None:
            return self.inner
        return _block_key_patch(call.attn2_patches if call is not None else None, extra_options, self)

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        call: MuseVCall | None = extra_options.get(CALL_KEY)
        base = self._base(call, extra_options)
        if base is not None:
            out = base(q, k, v, extra_options)
        else:
            out = _spatial_attention(q, k, v, extra_options)
        if self.added:
            sigmas = extra_options.get("sigmas")
            sigma = float(sigmas.reshape(-1)[0]) if isinstance(sigmas, torch.Tensor) else float("inf")
            for callback, kwargs in self.added:
                if kwargs.get("sigma_end", float("-inf")) <= sigma <= kwargs.get("sigma_start", float("inf")):
                    out = out + callback(out, q, k, v, extra_options, **kwargs)
        if self.prefix is None or call is None or call.ip_tokens is None or call.ip_scale == 0 or call.motion is None:
            return out
        kv = call.motion.get_submodule(self.prefix)
        tokens = call.ip_tokens
        if tokens.shape[0] != q.shape[0]:  # text attended once per CFG chunk (_shared_text_attn2): so are the tokens
            tokens = tokens[::call.num_frames]
        return out + call.ip_scale * kv.attention(q, tokens, heads).to(out.dtype)

    def runs_per_chunk(self, call: MuseVCall, extra_options) -> bool:
        """Whether this patch can take `_shared_text_attn2`'s once-per-chunk layout: only MuseV's own term runs."""
        return self.inner is None and not self.added and self._base(call, extra_options) is None


#: extra_options entry by which `_reference_only_attn1` hands the reference-only step to `_ReferenceOnlyAttention1`.
_REFERENCE_AFTER_PROJECTION = "musev_reference_after_projection"


def _block_replace_patch(replace: dict | None, extra_options):
    """The replace patch ComfyUI's BasicTransformerBlock picks for this block: `(block, id, index)`, else `(block, id)`."""
    block = extra_options.get("block")
    if not replace or block is None:
        return None
    key = (block[0], block[1], extra_options.get("block_index", 0))
    return replace[key] if key in replace else replace.get(block)


def _reference_only_attn1(n, context_attn1, value_attn1, extra_options):
    """attn1_patch: keys/values of every spatial self-attention also see the condition frame(s)' tokens.

    Where this block's attn1 replace patch is MuseV's own and no other pack has an attn1_patch, the condition tokens
    are appended after projection instead (`_ReferenceOnlyAttention1`); otherwise they are appended here.
    """
    call: MuseVCall | None = extra_options.get(CALL_KEY)
    if call is None or not call.condition_index or call.num_frames < 2:
        return n, context_attn1, value_attn1
    if call.reference_after_projection and isinstance(_block_replace_patch(call.attn1_patches, extra_options),
                                                      _ReferenceOnlyAttention1):
        extra_options[_REFERENCE_AFTER_PROJECTION] = True
        return n, context_attn1, value_attn1
    same = value_attn1 is context_attn1
    context_attn1 = reference_only_context(context_attn1, call.num_frames, call.condition_index)
    value_attn1 = context_attn1 if same else reference_only_context(value_attn1, call.num_frames,
                                                                    call.condition_index)
    return n, context_attn1, value_attn1


class _ReferenceOnlyAttention1:
    """`attn1` replace patch: reference-only self-attention with the condition tokens appended after projection.

    Projection is row-wise, so appending the condition frames' projected keys/values (rows of `k`, `v`) equals
    projecting `[frame tokens ; condition tokens]` for every frame, up to float rounding, at half the K/V projection
    cost (MuseV reference_only attention in its spatial transformer blocks). Runs only when `_reference_only_attn1`
    marked the block; otherwise it is plain attention. A patch another pack put on the block's `(block, id)` key,
    which ComfyUI ranks below this one, runs in its place with the same keys/values.
    q: `(b t) s (heads d)`; k, v: `(b t) s (heads d)` -> `(b t) s (heads d)`.
    """

    def __call__(self, q, k, v, extra_options):
        call: MuseVCall | None = extra_options.get(CALL_KEY)
        if extra_options.pop(_REFERENCE_AFTER_PROJECTION, False) and call is not None:
            k = reference_only_context(k, call.num_frames, call.condition_index)
            v = reference_only_context(v, call.num_frames, call.condition_index)
        other = _block_key_patch(call.attn1_patches if call is not None else None, extra_options, self)
        if other is not None:
            return other(q, k, v, extra_options)
        return _spatial_attention(q, k, v, extra_options)


#: the one `_ReferenceOnlyAttention1` (stateless) placed on every spatial self-attention of a MuseV MODEL
_REFERENCE_ONLY_ATTENTION1 = _ReferenceOnlyAttention1()


#: extra_options entry by which `_shared_text_attn2` tells `_shared_text_output` the batch to restore.
_TEXT_ROWS = "musev_text_rows"


def _text_shared_per_chunk(context: torch.Tensor | None, chunks: int, num_frames: int) -> bool:
    """Whether every frame of each CFG chunk has the same cross-attention context (`(b t) tokens dim`)."""
    if context is None or context.ndim != 3 or num_frames < 2 or context.shape[0] != chunks * num_frames:
        return False
    per_chunk = context.reshape(chunks, num_frames, *context.shape[1:])
    return bool(torch.equal(per_chunk, per_chunk[:, :1].expand_as(per_chunk)))


def _shared_text_attn2(n, context_attn2, value_attn2, extra_options):
    """attn2_patch: attend the text once per CFG chunk instead of once per frame.

    Cross-attention treats every query row on its own, so the `(b t) hw c` queries of a chunk whose frames share one
    prompt can attend as one `b (t hw) c` row set to that prompt's `b tokens dim` context: the keys/values are
    projected b times instead of b*t times (the text K/V projection was ~4-8% of a window call). The result is the
    same up to float rounding of the kernels. Skipped when the call does not qualify (`MuseVCall.shared_text`) or
    another pack's attn2 replace patch sits on this block (it expects the per-frame layout; MuseV's own IP-Adapter
    patch takes either); `_shared_text_output` restores `(b t) hw c` afterwards.
    """
    call: MuseVCall | None = extra_options.get(CALL_KEY)
    if call is None or not call.shared_text or n.ndim != 3 or context_attn2 is None:
        return n, context_attn2, value_attn2
    t = call.num_frames
    if n.shape[0] % t or context_attn2.shape[0] != n.shape[0]:
        return n, context_attn2, value_attn2
    replace = _block_replace_patch(call.attn2_patches, extra_options)
    if replace is not None and not (isinstance(replace, _IPAdapterAttention2)
                                    and replace.runs_per_chunk(call, extra_options)):
        return n, context_attn2, value_attn2
    extra_options[_TEXT_ROWS] = n.shape[0]
    same = value_attn2 is context_attn2
    context_attn2 = context_attn2[::t].contiguous()
    value_attn2 = context_attn2 if same or value_attn2 is None else value_attn2[::t].contiguous()
    return n.reshape(n.shape[0] // t, t * n.shape[1], n.shape[2]), context_attn2, value_attn2


def _shared_text_output(n, extra_options):
    """attn2_output_patch: back to `(b t) hw c` after `_shared_text_attn2` ran on this block."""
    rows = extra_options.pop(_TEXT_ROWS, None)
    if rows is None:
        return n
    return n.reshape(rows, n.shape[1] * n.shape[0] // rows, n.shape[2])


class _DiffusionModelWrapper:
    """DIFFUSION_MODEL wrapper: derive the call's frame layout and frame embedding, then run the UNet.

    Holds a reference to the motion module (wrappers are copied by reference on clone; `__deepcopy__` keeps it so).
    """

    def __init__(self, motion: MuseVMotionModule):
        self.motion = motion

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, x, timesteps=None, context=None, y=None, control=None, transformer_options={},
                 **kwargs):
        chunks = max(1, len(transformer_options.get("cond_or_uncond", [0])))
        if x.shape[0] % chunks:
            raise ValueError(f"MuseV: batch of {x.shape[0]} frames does not split into {chunks} CFG chunks")
        num_frames = x.shape[0] // chunks
        window: MuseVWindow | None = transformer_options.get(WINDOW_KEY)
        condition_index = list(window.condition_index) if window is not None else []
        motion_speed = window.motion_speed if window is not None else DEFAULT_MOTION_SPEED
        # single images run like MuseV's text-to-image pass, which skips the temporal layers
        skip = num_frames < 2 or (window is not None and window.skip_temporal)
        femb = None if skip else self.motion.frame_embedding_for(num_frames, motion_speed, device=x.device,
                                                                 dtype=x.dtype)
        replace = transformer_options.get("patches_replace", {})
        patches = transformer_options.get("patches", {})
        call = MuseVCall(num_frames, femb, condition_index, skip, motion=self.motion,
                         zero_condition_temb=self.motion.zeroes_condition_temb,
                         attn2_patches=replace.get("attn2"), attn1_patches=replace.get("attn1"))
        call.shared_text = (list(patches.get("attn2_patch", [])) == [_shared_text_attn2]
                            and list(patches.get("attn2_output_patch", [])) == [_shared_text_output]
                            and _text_shared_per_chunk(context, chunks, num_frames))
        call.reference_after_projection = list(patches.get("attn1_patch", [])) == [_reference_only_attn1]
        if window is not None and self.motion.layout.fusion_channels:
            chunk_codes = list(transformer_options.get("cond_or_uncond", [0]))
            if window.reference is not None:
                call.reference = window.reference.for_chunks(chunk_codes, device=x.device, dtype=x.dtype)
            if window.ip_tokens is not None:
                call.ip_tokens = window.ip_tokens.rows(chunk_codes, num_frames, device=x.device, dtype=x.dtype)
                call.ip_scale = window.ip_tokens.scale
        options = dict(transformer_options)
        options[CALL_KEY] = call
        return executor(x, timesteps, context, y, control, options, **kwargs)


def comfy_attention_function(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """The `attention` function given to MuseV's modules: ComfyUI's `optimized_attention`.

    Looked up at call time, so the backend ComfyUI chose at start-up (`--use-sage-attention`, xformers, flash,
    PyTorch, split or sub-quadratic) and its batch-size limits apply to the temporal, reference-fusion and
    IP-Adapter attentions as to the UNet's own. Shapes as `musev_core.temporal.sdpa_attention`:
    q `b n (heads d)`, k/v `b m (heads d)` -> `b n (heads d)`.
    """
    return comfy_attention.optimized_attention(q, k, v, heads)


def _operations_for(model_patcher):
    """comfy.ops flavour matching the UNet's weight/compute dtypes (manual cast when they differ)."""
    base = model_patcher.model
    if getattr(base, "manual_cast_dtype", None) is not None:
        return comfy.ops.manual_cast
    return comfy.ops.disable_weight_init


def motion_weight_dtype(model_patcher) -> torch.dtype:
    """Dtype the MuseV weights are stored in for this MODEL: the UNet's weight dtype, except for 8-bit ones.

    An fp8 UNet (`--fp8_e4m3fn-unet`, fp8 checkpoints) runs with a wider compute dtype through ComfyUI's manual
    cast; MuseV's weights were never quantised, so they are kept in that compute dtype (fp16/bf16/fp32) instead
    of being rounded to fp8. They compute in the dtype of the features they receive (the MODEL's compute dtype).
    """
    base = model_patcher.model
    dtype = base.get_dtype()
    if dtype.is_floating_point and torch.empty((), dtype=dtype).element_size() >= 2:
        return dtype
    return getattr(base, "manual_cast_dtype", None) or torch.float16


def build_motion_patcher(model_patcher, source, name: str):
    """Build the temporal modules of a MuseV checkpoint for this MODEL and wrap them in a ModelPatcher.

    Args:
        model_patcher: the user's MODEL (SD1.5).
        source: an open `CheckpointFile` of the motion checkpoint (only its MuseV tensors are read), or its
            `{key: tensor}` state dict (only MuseV keys are used).
        name: file name for messages.
    Returns:
        `(motion_patcher, info)`; info as from `build_motion_module`.
    Raises:
        CheckpointError: not a MuseV checkpoint, or modules that do not fit the UNet.
    """
    base = model_patcher.model
    dtype = motion_weight_dtype(model_patcher)
    # weights kept wider than the UNet's (fp8 MODEL) are cast to the features' dtype like a manual-cast UNet
    operations = comfy.ops.manual_cast if dtype != base.get_dtype() else _operations_for(model_patcher)
    motion, info = build_motion_module(source, operations=operations, dtype=dtype,
                                       device=model_patcher.offload_device, name=name,
                                       attention=comfy_attention_function)
    check_fits(motion, base.diffusion_model, name)
    for _prefix, module, feature in motion.reference_fusions():
        setattr(module, FEATURE_ATTR, feature)
    motion.eval().requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(motion, load_device=model_patcher.load_device,
                                               offload_device=model_patcher.offload_device)
    return patcher, info


def apply_motion(model_patcher, motion_patcher):
    """Return a clone of `model_patcher` that runs MuseV's temporal modules (see module docstring).

    Replaces any MuseV motion module applied earlier to the same MODEL.
    """
    patched = model_patcher.clone()
    refuse_multigpu(patched)  # core MultiGPU cannot clone the motion modules per device (nodes/multigpu.py)
    patched.set_additional_models(KEY, [motion_patcher])
    patched.set_injections(KEY, [comfy.patcher_extension.PatcherInjection(inject=_inject, eject=_eject)])
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY,
                                 _DiffusionModelWrapper(motion_patcher.model))
    use_continuous_timesteps(patched)  # the UNet sees MuseV's fractional timesteps (nodes/timesteps.py)
    patches = patched.model_options["transformer_options"].setdefault("patches", {})
    embed_patches = [p for p in patches.get("forward_timestep_embed_patch", [])
                     if p[0] not in (TemporalConvLayer, TemporalTransformer)]
    patches["forward_timestep_embed_patch"] = embed_patches + [(TemporalConvLayer, _temporal_layer_handler),
                                                               (TemporalTransformer, _temporal_layer_handler),
                                                               (ReferenceFusionAttention, _reference_fusion_handler)]
    patches["attn1_patch"] = [p for p in patches.get("attn1_patch", []) if p is not _reference_only_attn1]
    patches["attn1_patch"].append(_reference_only_attn1)
    for name, patch in (("attn2_patch", _shared_text_attn2), ("attn2_output_patch", _shared_text_output)):
        patches[name] = [p for p in patches.get(name, []) if p is not patch] + [patch]
    patches["emb_patch"] = [p for p in patches.get("emb_patch", []) if p is not _zero_condition_temb]
    motion = motion_patcher.model
    if motion.zeroes_condition_temb:
        patches["emb_patch"].append(_zero_condition_temb)
    replace = patched.model_options["transformer_options"].setdefault("patches_replace", {})
    attn2 = dict(replace.get("attn2", {}))
    for key, patch in list(attn2.items()):  # an earlier MuseV patch gives back what it wrapped
        if isinstance(patch, _IPAdapterAttention2):
            if patch.added:
                attn2[key] = _IPAdapterAttention2(None, patch.inner, patch.added)
            elif patch.inner is not None:
                attn2[key] = patch.inner
            else:
                del attn2[key]
    attentions = locate_cross_attentions(model_patcher.model.diffusion_model)
    for prefix, _kv in motion.ip_adapter_kvs():
        block, index = attentions[prefix]
        key = (block[0], block[1], index)
        existing = attn2.get(key)
        if isinstance(existing, _IPAdapterAttention2):
            attn2[key] = _IPAdapterAttention2(prefix, existing.inner, existing.added)
        else:  # another pack's patch on this key keeps running inside MuseV's
            attn2[key] = _IPAdapterAttention2(prefix, existing)
    replace["attn2"] = attn2
    attn1 = {key: patch for key, patch in replace.get("attn1", {}).items()
             if not isinstance(patch, _ReferenceOnlyAttention1)}
    for block, index in attentions.values():  # not where another pack already replaces this self-attention
        if (block[0], block[1], index) not in attn1 and block not in attn1:
            attn1[(block[0], block[1], index)] = _REFERENCE_ONLY_ATTENTION1
    replace["attn1"] = attn1
    return patched


def unet_call(model_patcher, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, chunks,
              window: MuseVWindow | None = None) -> torch.Tensor:
    """One call of the patched UNet outside a sampler (parity tests, benchmarks).

    Loads the MODEL with its additional models (the MuseV motion modules) through ComfyUI's own
    `sampler_helpers.prepare_sampling`, as sampling does, so they sit on the load device and are injected; then
    calls the diffusion model with the transformer_options layout ComfyUI's `calc_cond_batch` builds. The timesteps
    are used as given (no sigma rounding, no continuous-timestep substitution).

    Args:
        x: `(b t) c h w` UNet input (already scaled, condition frames clean), on any device.
        timesteps: `(b t)` timesteps (not sigmas).
        context: `(b t) tokens dim` cross-attention context.
        chunks: b, the number of CFG chunks in the batch (codes 0..b-1), or the chunk codes in batch order
            (`cond_or_uncond`, e.g. `[1, 0]` for an [uncond, cond] batch).
        window: the MuseV window description (condition frame positions...), or None.
    Returns:
        `(b t) c h w` raw UNet output (epsilon for SD1.5) on the MODEL's load device.
    """
    import comfy.sampler_helpers
    codes = list(range(chunks)) if isinstance(chunks, int) else list(chunks)
    _model, _conds, loaded = comfy.sampler_helpers.prepare_sampling(model_patcher, tuple(x.shape), {},
                                                                   model_patcher.model_options)
    try:
        options = comfy.patcher_extension.copy_nested_dicts(model_patcher.model_options.get("transformer_options", {}))
        options["wrappers"] = comfy.patcher_extension.copy_nested_dicts(model_patcher.wrappers)
        options["cond_or_uncond"] = codes
        if window is not None:
            options[WINDOW_KEY] = window
        device = model_patcher.load_device
        dtype = getattr(model_patcher.model, "manual_cast_dtype", None) or model_patcher.model.get_dtype()
        with torch.no_grad():
            return model_patcher.model.diffusion_model(x.to(device, dtype), timesteps=timesteps.to(device),
                                                       context=context.to(device, dtype),
                                                       transformer_options=options)
    finally:
        comfy.sampler_helpers.cleanup_models({}, loaded)


def is_musev_model(model_patcher) -> bool:
    """Whether MuseV's temporal modules were applied to this MODEL."""
    return bool(model_patcher.get_additional_models_with_key(KEY))


def check_reference_inputs(model_patcher, reference: ReferenceFeatures | None, ip_tokens: IPTokens | None) -> None:
    """Refuse reference features / IP tokens that the MODEL's MuseV modules cannot use.

    Raises:
        ValueError: a plain `musev` MODEL, or features/tokens of another geometry (e.g. another ReferenceNet).
    """
    motion = _motion_of(model_patcher)
    if reference is None and ip_tokens is None:
        return
    if motion is None or not motion.layout.fusion_channels:
        flavour = None if motion is None else motion.flavour
        raise ValueError(f"reference features and IP tokens need a musev_referencenet MODEL (its fusion attentions "
                         f"and IP-Adapter attention), but this MODEL has the '{flavour}' motion checkpoint; load "
                         f"musev_referencenet/unet/... with 'Load MuseV UNet' or disconnect them")
    if reference is not None:
        for prefix, module, feature in motion.reference_fusions():
            tensor = reference.cond[-1] if feature == MID_FEATURE else (
                reference.cond[feature] if feature < reference.num_down else None)
            if tensor is None or tensor.shape[1] != _fusion_width(module):
                got = "none" if tensor is None else tensor.shape[1]
                raise ValueError(f"the reference features do not fit this MODEL: '{prefix}' needs feature {feature} "
                                 f"with {_fusion_width(module)} channels, got {got} (ReferenceNet of another model?)")
    if ip_tokens is not None:
        for prefix, kv in motion.ip_adapter_kvs():
            if ip_tokens.cond.shape[-1] != kv.to_k_ip.in_features:
                raise ValueError(f"the IP tokens are {ip_tokens.cond.shape[-1]} wide, this MODEL's IP-Adapter "
                                 f"attention expects {kv.to_k_ip.in_features} (image projection of another model?)")
            break


def musev_flavour(model_patcher) -> str | None:
    """`musev` / `musev_referencenet` for a MODEL with MuseV applied, else None."""
    motion = _motion_of(model_patcher)
    return None if motion is None else motion.flavour

