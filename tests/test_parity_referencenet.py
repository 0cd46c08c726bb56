"""Parity with the reference MuseV implementation, `musev_referencenet` flavour (ReferenceNet + IP-Adapter).

Same contract as test_parity_musev.py: every tensor goes through the adapter the nodes use (LoadMuseVUNet's
`build_motion_patcher` + `apply_motion`, the ReferenceNet node's `build_referencenet_patcher` + `encode_reference`,
the IP-Adapter node's image projection, the sampler's `musev_sample`), settings from report.json /
tiny_configs.json, MUSEV_PARITY_DIR honoured.
"""
import json
import os

import pytest
import safetensors.torch
import torch

import comfy_env
import tiny_models
from test_parity_musev import (_CallRecorder, assert_first_call_matches, assert_steps_match,
                               comfy_config_from_diffusers, final_latents, parity_dir, rel_err, run_fixture_pipeline)

TOLERANCE = 1e-4
FLAVOUR = "musev_referencenet"


@pytest.fixture(scope="module")
def refparity(comfy, shared_dir):
    root = parity_dir(shared_dir)
    if not os.path.isfile(os.path.join(root, "report.json")):
        pytest.fail(f"no parity fixtures in {root}")
    report = json.load(open(os.path.join(root, "report.json")))
    configs = json.load(open(os.path.join(root, "tiny_configs.json")))
    musev_model = comfy_env.pack_module("nodes.musev_model")
    referencenet = comfy_env.pack_module("nodes.referencenet")
    reference = comfy_env.pack_module("musev_core.reference")
    unet_config = comfy_config_from_diffusers(configs["unet_musev_referencenet"]["constructor_kwargs"])
    base = tiny_models.build_comfy_model(unet_config, report["scheduler"]["config"])
    weights = safetensors.torch.load_file(os.path.join(root, "tiny_unet_musev_referencenet.safetensors"))
    sd_keys = tiny_models.load_diffusers_unet_weights(base, unet_config, weights)
    motion_patcher, info = musev_model.build_motion_patcher(base, weights, "tiny_unet_musev_referencenet.safetensors")
    model = musev_model.apply_motion(base, motion_patcher)
    ref_weights = safetensors.torch.load_file(os.path.join(root, "tiny_referencenet.safetensors"))
    ref_patcher = referencenet.build_referencenet_patcher(ref_weights, "tiny_referencenet.safetensors")
    projection = reference.load_image_projection(os.path.join(root, "tiny_image_proj.safetensors"))
    return {"root": root, "report": report, "model": model, "info": info, "sd_keys": sd_keys, "weights": weights,
            "ref_patcher": ref_patcher, "ref_weights": ref_weights, "projection": projection}


def load(ctx, name):
    return safetensors.torch.load_file(os.path.join(ctx["root"], f"{name}.safetensors"))


def test_every_key_is_consumed(refparity):
    assert refparity["info"]["flavour"] == FLAVOUR
    assert refparity["info"]["musev_keys"] + refparity["sd_keys"] == len(refparity["weights"])
    encoder = refparity["ref_patcher"].model
    assert len(encoder.state_dict()) == len(refparity["ref_weights"])


def test_image_projection_matches_reference(refparity):
    reference = comfy_env.pack_module("musev_core.reference")
    data = load(refparity, "unet_forward_musev_referencenet")
    embeds = data["clip_image_embeds"]  # (2, 1, 16): the same random embedding set per half
    tokens = torch.stack([refparity["projection"](e) for e in embeds]).reshape(data["vision_clip_emb"].shape)
    assert rel_err(tokens, data["vision_clip_emb"]) < TOLERANCE
    # the pipeline's unconditional tokens are the projection of zeros, not zeros
    pipe = load(refparity, "pipeline_musev_referencenet_controlnet")
    cond, uncond = reference.ip_tokens(refparity["projection"], pipe["ip.image_embeds"])
    assert rel_err(cond[0], pipe["call0.vision_clip_emb"][1]) < TOLERANCE
    assert rel_err(uncond[0], pipe["call0.vision_clip_emb"][0]) < TOLERANCE
    assert uncond.abs().max() > 0.1


def _features(ctx, latent, cond_context, uncond_context):
    referencenet = comfy_env.pack_module("nodes.referencenet")
    return referencenet.encode_reference(ctx["ref_patcher"], latent, cond_context, uncond_context)


def test_referencenet_matches_reference(refparity):
    data = load(refparity, "unet_forward_musev_referencenet")
    latent, context = data["ref_latent"], data["vision_clip_emb"]  # [uncond, cond] halves
    features = _features(refparity, latent[1:2], context[1:2], context[0:1])
    for half, branch in ((1, features.cond), (0, features.uncond)):
        for i in range(12):
            assert rel_err(branch[i], data[f"refnet_down.{i}"][half:half + 1]) < TOLERANCE, f"down {i}"
        assert rel_err(branch[12], data["refnet_mid"][half:half + 1]) < TOLERANCE, "mid"


def _reference_from_fixture(ctx, data, prefix_down, key_mid):
    reference = comfy_env.pack_module("musev_core.reference")
    cond = tuple([data[f"{prefix_down}.{i}"][1:2] for i in range(12)] + [data[key_mid][1:2]])
    uncond = tuple([data[f"{prefix_down}.{i}"][0:1] for i in range(12)] + [data[key_mid][0:1]])
    return reference.ReferenceFeatures(cond=cond, uncond=uncond)


@pytest.mark.parametrize("skip_temporal", [False, True])
def test_unet_forward_matches_reference(refparity, skip_temporal):
    musev_model = comfy_env.pack_module("nodes.musev_model")
    reference = comfy_env.pack_module("musev_core.reference")
    data = load(refparity, "unet_forward_musev_referencenet")
    settings = refparity["report"]["unet_forward_settings"]
    sample = data["sample"]
    b, c, t, h, w = sample.shape
    # fixture halves are [uncond, cond]; ComfyUI chunk codes: 0 = cond, 1 = uncond
    x = sample.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    timesteps = data["timestep"].float().expand(b * t).clone()
    context = data["encoder_hidden_states"].repeat_interleave(t, dim=0)
    features = _reference_from_fixture(refparity, data, "refnet_down", "refnet_mid")
    tokens = reference.IPTokens(cond=data["vision_clip_emb"][1:2], uncond=data["vision_clip_emb"][0:1],
                                scale=settings["ip_adapter_scale"])
    window = musev_model.MuseVWindow(condition_index=data["vision_index"].tolist(), frames=list(range(t)),
                                     full_length=t, motion_speed=settings["sample_frame_rate"],
                                     skip_temporal=skip_temporal, reference=features, ip_tokens=tokens)
    out = unet_call_chunks(musev_model, refparity["model"], x, timesteps, context, [1, 0], window)
    out = out.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
    expected = data["out_skip_temporal" if skip_temporal else "out"]
    assert rel_err(out, expected) < TOLERANCE


def unet_call_chunks(musev_model, model, x, timesteps, context, chunks, window):
    """unet_call with an explicit cond_or_uncond order (the fixture batch is [uncond, cond])."""
    return musev_model.unet_call(model, x, timesteps, context, list(chunks), window)


def test_reference_paths_change_the_output(refparity):
    """Guard against a parity pass with the fusion or IP attention silently not running."""
    musev_model = comfy_env.pack_module("nodes.musev_model")
    reference = comfy_env.pack_module("musev_core.reference")
    data = load(refparity, "unet_forward_musev_referencenet")
    b, c, t, h, w = data["sample"].shape
    x = data["sample"].permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    timesteps = data["timestep"].float().expand(b * t).clone()
    context = data["encoder_hidden_states"].repeat_interleave(t, dim=0)
    features = _reference_from_fixture(refparity, data, "refnet_down", "refnet_mid")
    tokens = reference.IPTokens(cond=data["vision_clip_emb"][1:2], uncond=data["vision_clip_emb"][0:1])
    outs = {}
    for name, feats, toks in (("both", features, tokens), ("no_ref", None, tokens), ("no_ip", features, None)):
        window = musev_model.MuseVWindow(condition_index=[0], frames=list(range(t)), full_length=t,
                                         motion_speed=8.0, reference=feats, ip_tokens=toks)
        outs[name] = unet_call_chunks(musev_model, refparity["model"], x, timesteps, context, [1, 0], window)
    assert (outs["both"] - outs["no_ref"]).abs().mean() > 0.01
    assert (outs["both"] - outs["no_ip"]).abs().mean() > 0.01


@pytest.fixture(scope="module")
def refpipeline(refparity):
    import comfy.patcher_extension
    musev_model = comfy_env.pack_module("nodes.musev_model")
    reference = comfy_env.pack_module("musev_core.reference")
    data = load(refparity, "pipeline_musev_referencenet")
    extra = load(refparity, "pipeline_musev_referencenet_controlnet")  # ip.* and refer.* live there
    settings = refparity["report"]["pipeline_settings"]
    model = refparity["model"].clone()
    recorder = _CallRecorder(musev_model.WINDOW_KEY)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "parity_recorder", recorder)

    cond_tokens, uncond_tokens = reference.ip_tokens(refparity["projection"], extra["ip.image_embeds"])
    tokens = reference.IPTokens(cond=cond_tokens, uncond=uncond_tokens, scale=settings["ip_adapter_scale"])
    features = _features(refparity, extra["refer.vae_latents"][1:2], tokens.cond, tokens.uncond)
    run = run_fixture_pipeline(model, data, settings, reference=features, ip_tokens=tokens)
    return dict(run, extra=extra, calls=recorder.calls, features=features,
                sigmas=refparity["report"]["scheduler"]["sigmas"])


def test_pipeline_reference_features_match(refpipeline):
    data, features = refpipeline["data"], refpipeline["features"]
    for half, branch in ((1, features.cond), (0, features.uncond)):
        for i in range(12):
            assert rel_err(branch[i], data[f"call0.down_block_refer_embs.{i}"][half:half + 1]) < TOLERANCE
        assert rel_err(branch[12], data["call0.mid_block_refer_emb"][half:half + 1]) < TOLERANCE


def test_pipeline_first_call_matches_reference(refpipeline):
    assert_first_call_matches(refpipeline)


def test_pipeline_per_step_and_final_latents_match(refpipeline):
    assert_steps_match(refpipeline)
    assert rel_err(final_latents(refpipeline), refpipeline["data"]["final_latents"]) < TOLERANCE
