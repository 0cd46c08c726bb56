"""MuseV's attentions on ComfyUI's attention backend, and MuseV in the MODEL's dtype (bf16, fp8 weights), in-process.

Runs on the thin SD1.5 model and the tiny MuseV files (tests/tiny_models.py).
"""
import os

import pytest
import torch

import comfy_env
import tiny_models

#: bf16 run of the whole sampler against fp32: max |difference| over max |fp32| of the latents (bf16 keeps 8
#: mantissa bits, ~4e-3 relative per rounding; two Euler steps over ~40 layers stay well inside this).
BF16_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def aenv(comfy, tiny_models_cache, tmp_path_factory):
    import comfy.sd
    import nodes
    models = str(tmp_path_factory.mktemp("models"))
    names = tiny_models.use_tiny_model_set(models, tiny_models_cache)
    checkpoint = os.path.join(models, "checkpoints", names["checkpoint"])
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(checkpoint, output_vae=True, output_clip=True)[:3]
    with torch.inference_mode():
        positive = nodes.CLIPTextEncode().encode(clip, "a portrait, smiling")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
        image = torch.linspace(0, 1, 64 * 64 * 3).reshape(1, 64, 64, 3)
        condition = nodes.VAEEncode().encode(vae, image)[0]["samples"]
    return {"model": model, "names": names, "checkpoint": checkpoint, "positive": positive, "negative": negative,
            "condition": condition, "loader": comfy_env.pack_module("nodes.unet_loader").LoadMuseVUNet()}


def _sample(aenv, model):
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    with torch.inference_mode():
        return parallel.musev_sample(model, aenv["positive"], aenv["negative"], aenv["condition"], 6, 0, 0, seed=5,
                                     steps=2, cfg=3.5, sampler_name="euler", scheduler="normal", context_frames=4,
                                     context_overlap=1, fuse_method="flat", motion_speed=8.0, w_ind_noise=0.5,
                                     img_weight=0.001, denoise=1.0)


def test_every_musev_attention_runs_on_comfy_optimized_attention(aenv, monkeypatch):
    import comfy.ldm.modules.attention as comfy_attention
    musev_model = comfy_env.pack_module("nodes.musev_model")
    reference = comfy_env.pack_module("musev_core.reference")
    temporal = comfy_env.pack_module("musev_core.temporal")
    model = aenv["loader"].load(aenv["model"], aenv["names"]["referencenet_unet"])[0]
    motion = model.get_additional_models_with_key(musev_model.KEY)[0].model
    # random reference maps of 2x2 cells, each with the channels its fusion attention reads
    channels = {feature: musev_model._fusion_width(m) for _p, m, feature in motion.reference_fusions()}
    maps = tuple(torch.randn(1, channels.get(i, 8), 1, 2, 2) for i in range(12)) + \
        (torch.randn(1, channels["mid"], 1, 2, 2),)
    features = reference.ReferenceFeatures(cond=maps, uncond=maps)
    tokens = reference.IPTokens(cond=torch.randn(1, 4, 32), uncond=torch.randn(1, 4, 32))
    if tokens.cond.shape[-1] != next(motion.ip_adapter_kvs())[1].to_k_ip.in_features:
        width = next(motion.ip_adapter_kvs())[1].to_k_ip.in_features
        tokens = reference.IPTokens(cond=torch.randn(1, 4, width), uncond=torch.randn(1, 4, width))
    calls = []
    original = comfy_attention.optimized_attention

    def recording(q, k, v, heads, *args, **kwargs):
        calls.append((tuple(q.shape), tuple(k.shape)))
        return original(q, k, v, heads, *args, **kwargs)

    monkeypatch.setattr(comfy_attention, "optimized_attention", recording)
    chunks, t = 2, 5  # 1 condition frame + 4: t differs from the 4 IP tokens
    x = torch.randn(chunks * t, 4, 8, 8)
    context = torch.randn(chunks * t, 77, aenv["positive"][0][0].shape[-1])
    window = musev_model.MuseVWindow(condition_index=[0], frames=list(range(t)), full_length=t, reference=features,
                                     ip_tokens=tokens)
    out = musev_model.unet_call(model, x, torch.full((chunks * t,), 500.0), context, chunks, window)
    assert out.shape == x.shape and torch.isfinite(out).all()
    temporal_calls = [c for c in calls if c[0][1] == t and c[1][1] == t]
    fusion_calls = [c for c in calls if c[1][1] == c[0][1] + 4 and c[0][0] == chunks * t]
    ip_calls = [c for c in calls if c[1][1] == 4 and c[0][0] == chunks * t]
    n_temporal = sum(isinstance(m, temporal.TemporalTransformer) for _n, m in motion.named_temporal_modules())
    assert len(temporal_calls) == 2 * n_temporal > 0  # attn1 and attn2 of every temporal transformer
    assert all(q[0] % chunks == 0 and q[0] > chunks for q, _k in temporal_calls)  # (b h w) batches
    assert len(fusion_calls) == len(list(motion.reference_fusions())) > 0  # 13 at full size
    assert len(ip_calls) == len(list(motion.ip_adapter_kvs())) > 0  # 16 at full size


def _model_in(aenv, weight_dtype, compute_dtype=None):
    """The thin checkpoint loaded with another UNet weight dtype; `compute_dtype` forces the compute dtype.

    On CPU ComfyUI computes bf16 weights in fp32 (manual cast); the bf16 test sets the compute dtype of its own
    model instance to bf16 to run the whole sampler in bf16 as a GPU would.
    """
    import comfy.sd
    model = comfy.sd.load_checkpoint_guess_config(aenv["checkpoint"], output_vae=False, output_clip=False,
                                                  model_options={"dtype": weight_dtype})[0]
    if compute_dtype is not None:
        model.model.manual_cast_dtype = compute_dtype
    return model


def test_the_whole_sampler_runs_in_bf16_close_to_fp32(aenv):
    musev_model = comfy_env.pack_module("nodes.musev_model")
    reference_run = _sample(aenv, aenv["loader"].load(aenv["model"], aenv["names"]["musev_unet"])[0])
    bf16_model = aenv["loader"].load(_model_in(aenv, torch.bfloat16, torch.bfloat16), aenv["names"]["musev_unet"])[0]
    motion = bf16_model.get_additional_models_with_key(musev_model.KEY)[0].model
    assert {p.dtype for p in motion.parameters()} == {torch.bfloat16}
    seen = []
    handle = bf16_model.model.diffusion_model.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].dtype))
    try:
        run = _sample(aenv, bf16_model)
    finally:
        handle.remove()
    assert seen and set(seen) == {torch.bfloat16}  # the UNet, MuseV modules included, ran in bf16
    assert run.dtype == torch.float32 and torch.isfinite(run).all()
    n_cond = aenv["condition"].shape[0]
    assert torch.equal(run[:n_cond], aenv["condition"].float())  # the condition frame stays exact
    error = ((run - reference_run).abs().max() / reference_run.abs().max()).item()
    assert error < BF16_TOLERANCE, error


def test_fp8_weights_keep_musev_in_the_compute_dtype(aenv):
    musev_model = comfy_env.pack_module("nodes.musev_model")
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8_e4m3fn")
    fp8 = _model_in(aenv, torch.float8_e4m3fn)
    assert fp8.model.get_dtype() == torch.float8_e4m3fn and fp8.model.manual_cast_dtype is not None
    model = aenv["loader"].load(fp8, aenv["names"]["musev_unet"])[0]
    motion = model.get_additional_models_with_key(musev_model.KEY)[0].model
    assert {p.dtype for p in motion.parameters()} == {fp8.model.manual_cast_dtype}
    run = _sample(aenv, model)
    assert torch.isfinite(run).all() and run.abs().max() > 0
