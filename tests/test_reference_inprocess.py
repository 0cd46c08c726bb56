"""The reference-conditioning nodes in-process on the thin SD1.5 model and the tiny musev_referencenet files."""
import os

import pytest
import torch

import comfy_env
import tiny_models


@pytest.fixture(scope="module")
def renv(comfy, tiny_models_cache, tmp_path_factory):
    import comfy.clip_vision
    import comfy.sd
    import nodes
    models = str(tmp_path_factory.mktemp("models"))
    names = tiny_models.use_tiny_model_set(models, tiny_models_cache)
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(
        os.path.join(models, "checkpoints", names["checkpoint"]), output_vae=True, output_clip=True)[:3]
    clip_vision = comfy.clip_vision.load(os.path.join(models, "clip_vision", names["clip_vision"]))
    loader = comfy_env.pack_module("nodes.unet_loader").LoadMuseVUNet()
    ref_nodes = comfy_env.pack_module("nodes.reference_nodes")
    with torch.inference_mode():
        positive = nodes.CLIPTextEncode().encode(clip, "a portrait, smiling")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
        image = torch.linspace(0, 1, 64 * 64 * 3).reshape(1, 64, 64, 3)
        condition = nodes.VAEEncode().encode(vae, image)[0]["samples"]
        ref_model = loader.load(model, names["referencenet_unet"])[0]
        plain_model = loader.load(model, names["musev_unet"])[0]
        tokens = ref_nodes.MuseVIPAdapterEmbed().embed(clip_vision, image, names["image_proj"], 1.0, "center")[0]
        reference = ref_nodes.MuseVReferenceNetEncode().encode(names["referencenet"], vae, image,
                                                               ip_tokens=tokens)[0]
    return {"names": names, "vae": vae, "image": image, "positive": positive, "negative": negative,
            "condition": condition, "ref_model": ref_model, "plain_model": plain_model, "tokens": tokens,
            "reference": reference, "ref_nodes": ref_nodes, "clip_vision": clip_vision, "model": model,
            "loader": loader}


def sample(renv, model, reference=None, ip_tokens=None, frames=5):
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    with torch.inference_mode():
        return parallel.musev_sample(model, renv["positive"], renv["negative"], renv["condition"], frames, 0, 0, seed=2,
                                     steps=2, cfg=3.5, sampler_name="euler", scheduler="normal", context_frames=4,
                                     context_overlap=1, fuse_method="flat", motion_speed=8.0, w_ind_noise=0.5,
                                     img_weight=0.001, denoise=1.0, reference=reference, ip_tokens=ip_tokens)


def test_ip_tokens_are_projections_of_the_clip_embedding_and_of_zeros(renv):
    tokens = renv["tokens"]
    assert tokens.cond.shape == tokens.uncond.shape == (1, 4, 768)
    assert tokens.scale == 1.0
    # the unconditional tokens are the projection of a zero embedding: LayerNorm(bias) in every token, not zeros
    reference = comfy_env.pack_module("musev_core.reference")
    projection = reference.load_image_projection(_path(renv, "musev", renv["names"]["image_proj"]))
    zero_tokens = projection(torch.zeros(1, projection.embed_dim))
    assert torch.allclose(tokens.uncond[0], zero_tokens[0], atol=1e-5)
    assert tokens.uncond.abs().max() > 0.1 and not torch.allclose(tokens.cond, tokens.uncond)


def _path(renv, folder, name):
    import folder_paths
    return folder_paths.get_full_path(folder, name)


def test_referencenet_features_follow_the_unet_skip_layout(renv):
    reference = renv["reference"]
    # thin UNet: conv_in, level-0 layer, level-0 downsampler, level-1 layer, then the mid block
    shapes = [tuple(f.shape) for f in reference.cond]
    assert shapes == [(1, 320, 1, 8, 8), (1, 320, 1, 8, 8), (1, 320, 1, 4, 4), (1, 320, 1, 4, 4), (1, 320, 1, 4, 4)]
    assert [tuple(f.shape) for f in reference.uncond] == shapes
    # cond and uncond branches differ only by their context (IP tokens vs projection of zeros)
    assert not torch.allclose(reference.cond[1], reference.uncond[1])
    assert torch.equal(reference.cond[0], reference.uncond[0])  # conv_in output does not see the context


def test_referencenet_runs_under_comfy_model_management(renv):
    import comfy.model_management
    patcher = renv["ref_nodes"]._REFERENCENET_CACHE.value
    assert any(loaded.model is patcher for loaded in comfy.model_management.current_loaded_models)
    comfy.model_management.unload_all_models()  # what ComfyUI does when it needs the memory
    assert not any(loaded.model is patcher for loaded in comfy.model_management.current_loaded_models)


def test_reference_and_ip_tokens_change_the_video(renv):
    both = sample(renv, renv["ref_model"], renv["reference"], renv["tokens"])
    none = sample(renv, renv["ref_model"])
    only_ip = sample(renv, renv["ref_model"], None, renv["tokens"])
    assert both.shape == (6, 4, 8, 8) and torch.isfinite(both).all()
    assert torch.equal(both[0], renv["condition"][0])
    assert (both[1:] - none[1:]).abs().mean() > 1e-3
    assert (both[1:] - only_ip[1:]).abs().mean() > 1e-3


def test_ip_scale_zero_equals_no_ip_tokens(renv):
    reference = comfy_env.pack_module("musev_core.reference")
    tokens = renv["tokens"]
    off = reference.IPTokens(cond=tokens.cond, uncond=tokens.uncond, scale=0.0)
    assert torch.equal(sample(renv, renv["ref_model"], renv["reference"], off),
                       sample(renv, renv["ref_model"], renv["reference"], None))


def test_reference_on_a_plain_musev_model_is_refused(renv):
    with pytest.raises(ValueError, match="need a musev_referencenet MODEL.*'musev' motion checkpoint"):
        sample(renv, renv["plain_model"], renv["reference"], renv["tokens"])


def test_a_motion_unet_in_the_referencenet_node_is_named(renv):
    checkpoint = comfy_env.pack_module("musev_core.checkpoint")
    node = renv["ref_nodes"].MuseVReferenceNetEncode()
    with pytest.raises(checkpoint.CheckpointError) as err:
        node.encode(renv["names"]["musev_unet"], renv["vae"], renv["image"], ip_tokens=renv["tokens"])
    message = str(err.value)
    assert f"{renv['names']['musev_unet']} is not a MuseV ReferenceNet" in message
    assert "a MuseV motion UNet" in message and "Load MuseV UNet" in message


def test_referencenet_needs_a_context(renv):
    node = renv["ref_nodes"].MuseVReferenceNetEncode()
    with pytest.raises(ValueError, match="connect ip_tokens .* or both positive and negative"):
        node.encode(renv["names"]["referencenet"], renv["vae"], renv["image"], positive=renv["positive"])
    # with the prompts as context (MuseV without IP-Adapter) it runs
    with torch.inference_mode():
        features = node.encode(renv["names"]["referencenet"], renv["vae"], renv["image"], positive=renv["positive"],
                               negative=renv["negative"], width=32, height=48)[0]
    assert features.cond[0].shape == (1, 320, 1, 6, 4)


def test_image_projection_of_the_wrong_width_is_refused(renv):
    with pytest.raises(ValueError, match="image embeddings of shape \\(1, 768\\).*expects width 1024"):
        reference = comfy_env.pack_module("musev_core.reference")
        projection = reference.ImageProjection(1024, 4, 768)
        reference.ip_tokens(projection, torch.zeros(1, 768))


def test_a_non_projection_file_in_the_ip_node_is_named(renv):
    checkpoint = comfy_env.pack_module("musev_core.checkpoint")
    reference = comfy_env.pack_module("musev_core.reference")
    with pytest.raises(checkpoint.CheckpointError, match="is not an IP-Adapter image projection"):
        reference.load_image_projection(_path(renv, "musev", renv["names"]["referencenet"]), "r.safetensors")
