"""The cheaper window call (issue 11 item 5) computes what the plain one computes, in-process on the tiny models.

- MuseV's `(3, 1, 1)` temporal convolutions run as `(3, 1)` 2-D convolutions: bitwise the same as `conv3d`.
- The spatial cross-attentions project the text once per CFG chunk when the chunk's frames share one prompt:
  same UNet output within float rounding, and never when frames differ or another pack patches attn2.
- On CPU the temporal feed-forward runs in row chunks: MuseV's GEGLU result.
"""
import os

import pytest
import torch
import torch.nn.functional as F

import comfy_env
import tiny_models

#: max |a - b| / max |b| allowed between the once-per-chunk and the once-per-frame cross-attention (fp32 rounding)
SHARED_TEXT_TOLERANCE = 1e-5


def _reference_temporal_conv(layer, x, num_frames):
    """MuseV's TemporalConvLayer written with conv3d over `b c t h w` (the layout MuseV uses)."""
    bt, c, h, w = x.shape
    video = x.reshape(bt // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)
    y = video
    for stage in (layer.conv1, layer.conv2, layer.conv3, layer.conv4):
        norm, conv = stage[0], stage[-1]
        y = F.group_norm(y, norm.num_groups, norm.weight, norm.bias, norm.eps)
        y = F.conv3d(F.silu(y), conv.weight, conv.bias, padding=(1, 0, 0))
    out = video + torch.abs(layer.temporal_weight) * y
    return out.permute(0, 2, 1, 3, 4).reshape(bt, c, h, w)


@pytest.mark.parametrize("provider", ["torch", "comfy_manual_cast"])
def test_temporal_conv_layer_is_bitwise_musevs_conv3d(comfy, provider):
    import comfy.ops
    temporal = comfy_env.pack_module("musev_core.temporal")
    operations = torch.nn if provider == "torch" else comfy.ops.manual_cast
    torch.manual_seed(0)
    layer = temporal.TemporalConvLayer(64, operations=operations)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.randn_like(p) * (0.1 if p.ndim > 1 else 1.0))
        layer.temporal_weight.fill_(0.7)
        x = torch.randn(2 * 5, 64, 6, 7)
        out = layer(x, 5)
        expected = _reference_temporal_conv(layer, x, 5)
    assert isinstance(layer.conv1[-1], operations.Conv3d)
    assert tuple(layer.conv1[-1].weight.shape) == (64, 64, 3, 1, 1)  # MuseV's key shape is kept
    assert out.shape == x.shape
    assert torch.equal(out, expected), float((out - expected).abs().max())


def test_time_conv_keeps_the_plain_path_for_other_kernels(comfy):
    time_conv_class = comfy_env.pack_module("musev_core.temporal").time_conv_class
    conv = time_conv_class(torch.nn.Conv3d)(4, 4, (3, 3, 1), padding=(1, 1, 0))
    x = torch.randn(1, 4, 5, 6, 3)
    with torch.no_grad():
        assert torch.equal(conv(x), F.conv3d(x, conv.weight, conv.bias, padding=(1, 1, 0)))
    assert time_conv_class(torch.nn.Conv3d) is type(conv)


def test_feed_forward_row_chunks_known_counts(comfy):
    temporal = comfy_env.pack_module("musev_core.temporal")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # MuseV's temporal layers at 16x16 latent, 2 x 13 frames, fp32: 320 ch splits, 640 and 1280 ch do not
    assert temporal.feed_forward_row_chunks(2 * 13 * 256, 320, 4, cpu) == 5
    assert temporal.feed_forward_row_chunks(2 * 13 * 64, 640, 4, cpu) == 1
    assert temporal.feed_forward_row_chunks(2 * 13 * 16, 1280, 4, cpu) == 1
    # the minimum rows per chunk caps the split; other devices never split
    assert temporal.feed_forward_row_chunks(3000, 1280, 4, cpu) == 2
    assert temporal.feed_forward_row_chunks(2 * 13 * 256, 320, 4, cuda) == 1


@pytest.mark.parametrize("provider", ["torch", "comfy_manual_cast"])
def test_chunked_feed_forward_is_musevs_geglu(comfy, provider, monkeypatch):
    import comfy.ops
    temporal = comfy_env.pack_module("musev_core.temporal")
    monkeypatch.setattr(temporal, "CPU_FEED_FORWARD_CHUNK_BYTES", 8 * 16 * 4 * 40)  # 40 rows of width 16
    monkeypatch.setattr(temporal, "CPU_FEED_FORWARD_MIN_ROWS", 8)
    operations = torch.nn if provider == "torch" else comfy.ops.manual_cast
    torch.manual_seed(0)
    ff = temporal.FeedForward(16, operations=operations)
    with torch.no_grad():  # comfy.ops classes leave their weights uninitialised
        for p in ff.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    projected_rows = []
    ff.net[0].proj.register_forward_hook(lambda module, args, out: projected_rows.append(args[0].shape[0]))
    x = torch.randn(7, 19, 16)  # 133 rows -> 4 chunks of at most 34
    with torch.no_grad():
        out = ff(x)
        value, gate = F.linear(x, ff.net[0].proj.weight, ff.net[0].proj.bias).chunk(2, dim=-1)
        expected = F.linear(value * F.gelu(gate), ff.net[2].weight, ff.net[2].bias)
    assert projected_rows == [34, 34, 34, 31]
    assert out.shape == x.shape
    assert torch.allclose(out, expected, rtol=0, atol=1e-6), float((out - expected).abs().max())


@pytest.fixture(scope="module")
def senv(comfy, tiny_models_cache, tmp_path_factory):
    import comfy.sd
    models = str(tmp_path_factory.mktemp("models"))
    names = tiny_models.use_tiny_model_set(models, tiny_models_cache)
    checkpoint = os.path.join(models, "checkpoints", names["checkpoint"])
    model = comfy.sd.load_checkpoint_guess_config(checkpoint, output_vae=False, output_clip=False)[0]
    musev = comfy_env.pack_module("nodes.unet_loader").LoadMuseVUNet().load(model, names["musev_unet"])[0]
    return {"musev": musev, "plain": model, "checkpoint": checkpoint, "names": names}


def _key_projection_inputs(model, attention: str, axis: int):
    """Forward hooks on `attention` ("attn1"/"attn2") to_k of every spatial transformer block: `input.shape[axis]`
    of each projection, in call order (axis 0: rows, 1: tokens per row)."""
    from comfy.ldm.modules.attention import BasicTransformerBlock
    sizes, handles = [], []
    for module in model.model.diffusion_model.modules():
        if isinstance(module, BasicTransformerBlock):
            projection = getattr(module, attention).to_k
            handles.append(projection.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[axis])))
    return sizes, handles


def _cross_attention_rows(model):
    """The batch size each spatial cross-attention projects its keys for."""
    return _key_projection_inputs(model, "attn2", 0)


def _call(model, context, chunks=2, t=5, seed=1):
    musev_model = comfy_env.pack_module("nodes.musev_model")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(chunks * t, 4, 8, 8, generator=g)
    window = musev_model.MuseVWindow(condition_index=[0], frames=list(range(t)), full_length=t)
    rows, handles = _cross_attention_rows(model)
    try:
        out = musev_model.unet_call(model, x, torch.full((chunks * t,), 400.0), context, chunks, window)
    finally:
        for h in handles:
            h.remove()
    return out, rows


def _context_dim(model):
    from comfy.ldm.modules.attention import BasicTransformerBlock
    blocks = [m for m in model.model.diffusion_model.modules() if isinstance(m, BasicTransformerBlock)]
    return blocks[0].attn2.to_k.in_features


def _other_pack_attn2_patch(n, context, value, extra_options):
    return n, context, value


def test_text_is_projected_once_per_chunk_and_gives_the_per_frame_result(senv):
    model = senv["musev"]
    chunks, t = 2, 5
    dim = _context_dim(model)
    prompts = torch.randn(chunks, 77, dim, generator=torch.Generator().manual_seed(4))
    context = prompts.repeat_interleave(t, dim=0)
    with torch.no_grad():
        shared, shared_rows = _call(model, context, chunks, t)
        # another pack's attn2_patch switches the shortcut off: the per-frame computation of the same call
        other = model.clone()
        other.set_model_attn2_patch(_other_pack_attn2_patch)
        per_frame, per_frame_rows = _call(other, context, chunks, t)
    assert shared_rows and set(shared_rows) == {chunks}
    assert set(per_frame_rows) == {chunks * t} and len(per_frame_rows) == len(shared_rows)
    error = float((shared - per_frame).abs().max() / per_frame.abs().max())
    assert error <= SHARED_TEXT_TOLERANCE, error
    assert torch.isfinite(shared).all()


def test_frames_with_their_own_prompts_attend_per_frame(senv):
    model = senv["musev"]
    chunks, t = 2, 5
    context = torch.randn(chunks * t, 77, _context_dim(model), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _out, rows = _call(model, context, chunks, t)
    assert rows and set(rows) == {chunks * t}


def test_an_attn2_replace_patch_sees_per_frame_rows_and_the_result_is_unchanged(senv):
    import comfy.ldm.modules.attention as comfy_attention
    model = senv["musev"]
    chunks, t = 2, 5
    dim = _context_dim(model)
    context = torch.randn(chunks, 77, dim, generator=torch.Generator().manual_seed(6)).repeat_interleave(t, dim=0)
    seen = []

    def replace(q, k, v, extra_options):
        seen.append((q.shape[0], k.shape[0]))
        return comfy_attention.optimized_attention(q, k, v, extra_options["n_heads"])

    patched = model.clone()
    patched.set_model_attn2_replace(replace, "input", 1)
    with torch.no_grad():
        out, rows = _call(patched, context, chunks, t)
        replaced = len(seen)
        other = patched.clone()
        other.set_model_attn2_patch(_other_pack_attn2_patch)
        per_frame, _rows = _call(other, context, chunks, t)
    assert seen and set(seen) == {(chunks * t, chunks * t)}  # the replaced block keeps the per-frame layout
    assert replaced and rows.count(chunks * t) == replaced and rows.count(chunks) == len(rows) - replaced > 0
    assert float((out - per_frame).abs().max() / per_frame.abs().max()) <= SHARED_TEXT_TOLERANCE


def _self_attention_tokens(model):
    """The tokens per row each spatial self-attention projects its keys from."""
    return _key_projection_inputs(model, "attn1", 1)


def _other_pack_attn1_patch(n, context, value, extra_options):
    return n, context, value


def _shared_context(model, chunks, t, seed):
    return torch.randn(chunks, 77, _context_dim(model), generator=torch.Generator().manual_seed(seed)) \
        .repeat_interleave(t, dim=0)


def test_condition_tokens_are_appended_after_projection_with_the_same_result(senv):
    model = senv["musev"]
    chunks, t = 2, 5
    context = _shared_context(model, chunks, t, 7)
    with torch.no_grad():
        tokens, handles = _self_attention_tokens(model)
        fast, _rows = _call(model, context, chunks, t)
        for h in handles:
            h.remove()
        # another pack's attn1_patch: the condition tokens are appended before projection, as MuseV writes it
        other = model.clone()
        other.set_model_attn1_patch(_other_pack_attn1_patch)
        slow_tokens, handles = _self_attention_tokens(other)
        slow, _rows = _call(other, context, chunks, t)
        for h in handles:
            h.remove()
    # the slow path projects each frame's tokens plus the condition frame's
    assert tokens and len(tokens) == len(slow_tokens)
    assert [2 * n for n in tokens] == slow_tokens
    error = float((fast - slow).abs().max() / slow.abs().max())
    assert error <= SHARED_TEXT_TOLERANCE, error


@pytest.mark.parametrize("order", ["before_musev", "after_musev", "block_key"])
def test_another_packs_attn1_replace_still_gets_the_condition_tokens(senv, comfy, order):
    import comfy.ldm.modules.attention as comfy_attention
    loader = comfy_env.pack_module("nodes.unet_loader").LoadMuseVUNet()
    base = senv["musev"]
    chunks, t = 2, 5
    context = _shared_context(base, chunks, t, 8)
    seen = []

    def perturbed(q, k, v, extra_options):  # like ComfyUI's Perturbed Attention Guidance on the middle block
        seen.append((q.shape[1], k.shape[1]))
        return comfy_attention.optimized_attention(q, k, v, extra_options["n_heads"])

    if order == "after_musev":
        model = base.clone()
        model.set_model_attn1_replace(perturbed, "middle", 0, 0)
    elif order == "block_key":
        model = base.clone()
        model.model_options["transformer_options"]["patches_replace"]["attn1"][("middle", 0)] = perturbed
    else:
        import comfy.sd
        plain_model = comfy.sd.load_checkpoint_guess_config(senv["checkpoint"], output_vae=False,
                                                            output_clip=False)[0]
        plain_model.set_model_attn1_replace(perturbed, "middle", 0, 0)
        model = loader.load(plain_model, senv["names"]["musev_unet"])[0]
    with torch.no_grad():
        out, _rows = _call(model, context, chunks, t)
        reference = model.clone()
        reference.set_model_attn1_patch(_other_pack_attn1_patch)
        expected, _rows = _call(reference, context, chunks, t)
    # every frame's queries meet its own tokens plus the condition frame's as keys
    assert seen and all(k == 2 * q for q, k in seen)
    assert float((out - expected).abs().max() / expected.abs().max()) <= SHARED_TEXT_TOLERANCE


def test_referencenet_flavour_attends_text_and_ip_tokens_once_per_chunk(senv):
    musev_model = comfy_env.pack_module("nodes.musev_model")
    reference = comfy_env.pack_module("musev_core.reference")
    model = comfy_env.pack_module("nodes.unet_loader").LoadMuseVUNet().load(
        senv["plain"], senv["names"]["referencenet_unet"])[0]
    motion = model.get_additional_models_with_key(musev_model.KEY)[0].model
    g = torch.Generator().manual_seed(9)
    channels = {feature: musev_model._fusion_width(m) for _p, m, feature in motion.reference_fusions()}
    maps = tuple(torch.randn(1, channels.get(i, 8), 1, 2, 2, generator=g) for i in range(12)) + \
        (torch.randn(1, channels["mid"], 1, 2, 2, generator=g),)
    width = next(motion.ip_adapter_kvs())[1].to_k_ip.in_features
    features = reference.ReferenceFeatures(cond=maps, uncond=tuple(m * 0.5 for m in maps))
    tokens = reference.IPTokens(cond=torch.randn(1, 4, width, generator=g), uncond=torch.randn(1, 4, width, generator=g))
    chunks, t = 2, 5
    context = _shared_context(model, chunks, t, 10)
    x = torch.randn(chunks * t, 4, 8, 8, generator=g)
    window = musev_model.MuseVWindow(condition_index=[0], frames=list(range(t)), full_length=t, reference=features,
                                     ip_tokens=tokens)
    results = {}
    for name, m in (("shared", model), ("per_frame", model.clone())):
        if name == "per_frame":
            m.set_model_attn2_patch(_other_pack_attn2_patch)
        rows, handles = _cross_attention_rows(m)
        with torch.no_grad():
            results[name] = (musev_model.unet_call(m, x, torch.full((chunks * t,), 400.0), context, chunks, window),
                             rows)
        for h in handles:
            h.remove()
    assert set(results["shared"][1]) == {chunks} and set(results["per_frame"][1]) == {chunks * t}
    shared, per_frame = results["shared"][0], results["per_frame"][0]
    assert float((shared - per_frame).abs().max() / per_frame.abs().max()) <= SHARED_TEXT_TOLERANCE


def test_replace_patches_honour_an_attention_override(senv):
    calls = []

    def override(func, q, k, v, heads, *args, **kwargs):  # what a kernel-swapping node installs
        calls.append((q.shape[1], k.shape[1]))
        return func(q, k, v, heads, *args, **kwargs)

    model = senv["musev"].clone()
    model.model_options["transformer_options"]["optimized_attention_override"] = override
    chunks, t = 2, 5
    with torch.no_grad():
        _call(model, _shared_context(model, chunks, t, 11), chunks, t)
    # MuseV's attn1 replace (own tokens + the condition frame's as keys) goes through the override
    assert any(k == 2 * q for q, k in calls)


def test_fusion_attention_projects_the_reference_once_per_batch_entry(comfy):
    reference = comfy_env.pack_module("musev_core.reference")
    temporal = comfy_env.pack_module("musev_core.temporal")
    torch.manual_seed(12)
    fusion = reference.ReferenceFusionAttention(64)
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        x = torch.randn(2 * 4, 64, 5, 6)
        ref = torch.randn(2, 64, 1, 3, 3)
        projected = []
        handle = fusion.to_k.register_forward_hook(lambda m, args, out: projected.append(args[0].shape[:2]))
        out = fusion(x, ref, 4)
        handle.remove()
        # MuseV's formula: every frame projects [reference tokens ; own tokens]
        own = x.reshape(8, 64, 30).transpose(1, 2)
        context = torch.cat([ref.flatten(2).transpose(1, 2).repeat_interleave(4, dim=0), own], dim=1)
        attended = temporal.sdpa_attention(fusion.to_q(own), fusion.to_k(context), fusion.to_v(context), fusion.heads)
        expected = x + fusion.to_out[0](attended).transpose(1, 2).reshape(x.shape)
    assert [tuple(s) for s in projected] == [(2, 9), (8, 30)]  # 9 reference tokens once per batch entry
    assert float((out - expected).abs().max() / expected.abs().max()) <= 1e-6
