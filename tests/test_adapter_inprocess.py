"""The ComfyUI adapter in-process on the thin SD1.5 model: injection, LoRA, samplers, progress, cancel, errors."""
import json
import os
import re

import pytest
import safetensors.torch
import torch

import comfy_env
import tiny_models


@pytest.fixture(scope="module")
def env(comfy, tiny_models_cache, tmp_path_factory):
    import comfy.sd
    models = str(tmp_path_factory.mktemp("models"))
    names = tiny_models.use_tiny_model_set(models, tiny_models_cache)
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(
        os.path.join(models, "checkpoints", names["checkpoint"]), output_vae=True, output_clip=True)[:3]
    loader = comfy_env.pack_module("nodes.unet_loader").LoadMuseVUNet()
    with torch.inference_mode():
        import nodes
        positive = nodes.CLIPTextEncode().encode(clip, "a portrait, smiling")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
        image = torch.linspace(0, 1, 64 * 64 * 3).reshape(1, 64, 64, 3)
        condition = nodes.VAEEncode().encode(vae, image)[0]["samples"]
    return {"model": model, "clip": clip, "vae": vae, "names": names, "models": models, "loader": loader,
            "positive": positive, "negative": negative, "condition": condition}


def musev(env, model=None):
    return env["loader"].load(model or env["model"], env["names"]["musev_unet"])[0]


def sample(env, model, frames=6, sampler="euler", scheduler="normal", steps=2, callback=None, condition=True,
           context_frames=4, context_overlap=1, fuse="flat", width=0, height=0, cfg=3.5, denoise=1.0, seed=3):
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    with torch.inference_mode():
        return parallel.musev_sample(model, env["positive"], env["negative"],
                                     env["condition"] if condition else None, frames, width, height, seed=seed,
                                     steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler,
                                     context_frames=context_frames, context_overlap=context_overlap,
                                     fuse_method=fuse, motion_speed=8.0, w_ind_noise=0.5, img_weight=0.001,
                                     denoise=denoise, callback=callback)


def test_injection_is_undone_and_leaves_weights_untouched(env):
    import comfy.model_management
    musev_model = comfy_env.pack_module("nodes.musev_model")
    temporal = comfy_env.pack_module("musev_core.temporal")
    unet = env["model"].model.diffusion_model
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    patched = musev(env)
    comfy.model_management.load_models_gpu([patched])
    inserted = [m for m in unet.modules() if isinstance(m, (temporal.TemporalConvLayer, temporal.TemporalTransformer))]
    temporal_slots = [k for k, (_c, anchor, _w) in musev_model.locate_slots(unet).items() if anchor is not None]
    assert len(inserted) == len(temporal_slots) > 0
    # the spatial transformer of input block 1 moved one place to make room for the temporal conv
    assert isinstance(unet.input_blocks[1][1], temporal.TemporalConvLayer)
    comfy.model_management.unload_all_models()
    assert not [m for m in unet.modules() if isinstance(m, (temporal.TemporalConvLayer, temporal.TemporalTransformer))]
    after = unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(not hasattr(m, "_musev_saved_eps") for m in unet.modules())


def test_lora_before_or_after_load_musev_unet_gives_the_same_video(env):
    import comfy.sd
    lora = safetensors.torch.load_file(os.path.join(env["models"], "loras", env["names"]["lora"]))
    lora_first, _ = comfy.sd.load_lora_for_models(env["model"], env["clip"], lora, 1.0, 1.0)
    before = sample(env, musev(env, lora_first))
    after_model, _ = comfy.sd.load_lora_for_models(musev(env), env["clip"], lora, 1.0, 1.0)
    after = sample(env, after_model)
    plain = sample(env, musev(env))
    assert torch.allclose(before, after, rtol=1e-5, atol=1e-5)
    assert (plain - before).abs().max() > 1e-2, "the LoRA had no effect"


@pytest.mark.parametrize("sampler, scheduler", [("euler_ancestral", "karras"), ("dpmpp_2m", "simple"),
                                                ("heun", "normal"), ("dpmpp_sde", "karras"), ("ddim", "ddim_uniform")])
def test_any_comfy_sampler_and_scheduler(env, sampler, scheduler):
    out = sample(env, musev(env), sampler=sampler, scheduler=scheduler)
    assert out.shape == (7, 4, 8, 8) and torch.isfinite(out).all()
    assert torch.equal(out[:1], env["condition"].float())


def test_progress_bar_and_previews_follow_the_steps(env):
    import comfy.cli_args
    import comfy.utils
    events, steps = [], []
    previous_hook, previous_method = comfy.utils.PROGRESS_BAR_HOOK, comfy.cli_args.args.preview_method
    comfy.cli_args.args.preview_method = comfy.cli_args.LatentPreviewMethod.Latent2RGB
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: events.append((value, total, preview)))
    try:
        sample(env, musev(env), steps=3, callback=lambda i, x0, x, total: steps.append((i, x0.shape)))
    finally:
        comfy.utils.set_progress_bar_global_hook(previous_hook)
        comfy.cli_args.args.preview_method = previous_method
    assert [(value, total) for value, total, _ in events] == [(1, 3), (2, 3), (3, 3)]
    # every step sends a latent preview image (of a generated frame, 8x8 latent cells)
    assert all(preview is not None and preview[1].size == (8, 8) for _, _, preview in events)
    assert [i for i, _ in steps] == [0, 1, 2] and steps[0][1] == (7, 4, 8, 8)


def test_cancel_stops_sampling_between_windows(env):
    import comfy.model_management
    calls = []

    def cancel_after_first_step(i, x0, x, total):
        calls.append(i)
        comfy.model_management.interrupt_current_processing(True)

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        sample(env, musev(env), steps=5, callback=cancel_after_first_step)
    comfy.model_management.interrupt_current_processing(False)
    assert calls == [0]


def test_without_condition_every_frame_comes_from_noise(env):
    out = sample(env, musev(env), frames=5, condition=False, width=64, height=48)
    assert out.shape == (5, 4, 6, 8) and torch.isfinite(out).all()


def test_window_fusion_methods_agree_when_one_window_covers_the_video(env):
    model = musev(env)
    flat = sample(env, model, frames=4, context_frames=4, fuse="flat")
    pyramid = sample(env, model, frames=4, context_frames=4, fuse="pyramid")
    assert torch.allclose(flat, pyramid, atol=1e-6)
    overlapping = sample(env, model, frames=6, context_frames=4, context_overlap=2, fuse="pyramid")
    assert not torch.allclose(overlapping[1:5], sample(env, model, frames=6, context_frames=4, context_overlap=2,
                                                       fuse="flat")[1:5])


def test_the_sampler_refuses_a_model_without_musev(env):
    node = comfy_env.pack_module("nodes.sampler").MuseVParallelDenoiseSampler()
    with pytest.raises(ValueError, match="pass it through 'Load MuseV UNet' first"):
        node.sample(env["model"], env["positive"], env["negative"], 4, 0, 2, 3.5, "euler", "normal", 4, 1, "flat",
                    8.0, 0.5, 0.001, 1.0, condition={"samples": env["condition"]})


def test_validate_inputs_messages():
    node = comfy_env.pack_module("nodes.sampler").MuseVParallelDenoiseSampler
    assert node.VALIDATE_INPUTS(context_frames=12, context_overlap=4) is True
    assert node.VALIDATE_INPUTS(context_frames=4, context_overlap=6) == (
        "context_overlap (6) must be smaller than context_frames (4): windows would never advance")
    assert node.VALIDATE_INPUTS(context_frames=300, context_overlap=4) == (
        "context_frames must be between 1 and 256, got 300")
    assert node.VALIDATE_INPUTS(context_frames=12, context_overlap=-1) == (
        "context_overlap must be between 0 and 255, got -1")
    assert node.VALIDATE_INPUTS(context_frames=None, context_overlap=4) is True  # linked: unknown when queued


def test_checkpoint_that_does_not_fit_the_model_is_refused(env, shared_dir):
    musev_model = comfy_env.pack_module("nodes.musev_model")
    checkpoint = comfy_env.pack_module("musev_core.checkpoint")
    released = json.load(open(os.path.join(shared_dir, "fixtures", "checkpoint_keys", "keys.json")))
    full_size = {k: torch.empty(s, device="meta") for k, s in released["musev"].items()}
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this MODEL") as err:
        musev_model.build_motion_patcher(env["model"], full_size, "musev/unet/diffusion_pytorch_model.safetensors")
    # the thin test UNet has fewer positions: only the side that differs is named (no "lacks []")
    assert "[]" not in str(err.value) and "has no module for" not in str(err.value)
    assert re.search(r"does not fit this MODEL: the checkpoint has \d+ module\(s\) the UNet has no place for "
                     r"\([\w.]+, [\w.]+, [\w.]+, \.\.\.\)\. MuseV needs an SD1.5 MODEL", str(err.value)), str(err.value)
    referencenet_unet = {k: torch.empty(s, device="meta") for k, s in released["musev_referencenet"].items()}
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this MODEL"):
        musev_model.build_motion_patcher(env["model"], referencenet_unet, "musev_referencenet/unet/x.safetensors")
    # a ReferenceNet is named as such, with the node to use it with
    referencenet = {k: torch.empty(s, device="meta") for k, s in released["referencenet"].items()}
    with pytest.raises(checkpoint.CheckpointError) as err:
        musev_model.build_motion_patcher(env["model"], referencenet, "musev_referencenet/referencenet/r.safetensors")
    assert "musev_referencenet/referencenet/r.safetensors is not a MuseV motion checkpoint" in str(err.value)
    assert "a MuseV ReferenceNet" in str(err.value) and "ReferenceNet node" in str(err.value)


def test_cfg_one_runs_the_conditional_branch_only(env):
    out = sample(env, musev(env), frames=5, cfg=1.0, seed=1)
    assert out.shape == (6, 4, 8, 8) and torch.isfinite(out).all()


def test_controlnet_hint_counts_other_than_one_or_every_frame_are_refused():
    parallel = comfy_env.pack_module("nodes.parallel_denoise")

    class Control:  # the attributes ComfyUI's ControlBase exposes
        def __init__(self, frames, previous=None):
            self.cond_hint_original = torch.zeros(frames, 3, 64, 64)
            self.previous_controlnet = previous

    handler = parallel.MuseVContextHandler(1, 4, 1)
    shared, per_frame = Control(1), Control(13)
    assert handler.per_frame_controls([[{"control": shared}], None], 13) == []
    assert handler.per_frame_controls([[{"control": Control(1, previous=per_frame)}], [{}]], 13) == [per_frame]
    with pytest.raises(ValueError, match="a ControlNet has 12 hint images, but the video has 13 frames "
                                         "\\(1 condition \\+ 12 generated\\): give one hint per frame"):
        handler.per_frame_controls([[{"control": Control(1, previous=Control(12))}], [{}]], 13)


def test_each_window_gets_the_hints_of_its_frames_condition_hint_first(env):
    import comfy.controlnet
    import nodes
    names = env["names"]
    control_net = comfy.controlnet.load_controlnet(os.path.join(env["models"], "controlnet", names["controlnet"]))
    frames = 7
    total = 1 + frames
    hints = torch.arange(total, dtype=torch.float32).reshape(total, 1, 1, 1).expand(total, 64, 64, 3) / 100
    positive, negative = nodes.ControlNetApplyAdvanced().apply_controlnet(
        env["positive"], env["negative"], control_net, hints, 1.0, 0.0, 1.0)[:2]
    control = positive[0][1]["control"]
    assert negative[0][1]["control"] is control
    seen = []
    original = control.get_control

    def recording(x_noisy, t, cond, batched_number, transformer_options):
        out = original(x_noisy, t, cond, batched_number, transformer_options)
        per_chunk = control.cond_hint.shape[0] // batched_number
        seen.append([round(float(v) * 100) for v in control.cond_hint[:per_chunk, 0, 0, 0]])
        return out

    control.get_control = recording  # this test's own ControlNet object only
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    with torch.inference_mode():
        with_hints = parallel.musev_sample(musev(env), positive, negative, env["condition"], frames, 0, 0, seed=3,
                                           steps=2, cfg=3.5, sampler_name="euler", scheduler="normal",
                                           context_frames=4, context_overlap=1, fuse_method="flat", motion_speed=8.0,
                                           w_ind_noise=0.5, img_weight=0.001, denoise=1.0)
    # windows over the 7 generated frames: [0-3], [3-6]; batch indices are +1 behind the condition frame 0
    assert seen == [[0, 1, 2, 3, 4], [0, 4, 5, 6, 7]] * 2
    assert torch.equal(control.cond_hint_original, hints.movedim(-1, 1))  # restored after sampling
    plain = sample(env, musev(env), frames=frames)
    assert (with_hints[1:] - plain[1:]).abs().mean() > 1e-4


def test_video2video_starts_from_the_video_noised_to_the_first_sigma_of_an_honest_schedule(env):
    import comfy.samplers
    noise_module = comfy_env.pack_module("musev_core.noise")
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    model = musev(env)
    video = torch.randn(7, 4, 8, 8, generator=torch.Generator().manual_seed(9))  # VAE latents of 7 frames
    latent_format = model.get_model_object("latent_format")
    unit = noise_module.initial_noise((1, 4, 5, 8, 8), torch.Generator().manual_seed(3), "video_fusion", 0.5)
    unit = unit[0].permute(1, 0, 2, 3)  # no image-based blend when a video is given (MuseV)
    for denoise in (1.0, 0.4):
        starts, count = [], []

        def on_step(i, x0, x, total):
            count.append(i)
            if i == 0:
                starts.append(x.clone())

        with torch.inference_mode():
            out = parallel.musev_sample(model, env["positive"], env["negative"], env["condition"], 5, 0, 0, seed=3,
                                        steps=4, cfg=3.5, sampler_name="euler", scheduler="normal", context_frames=4,
                                        context_overlap=1, fuse_method="flat", motion_speed=8.0, w_ind_noise=0.5,
                                        img_weight=0.001, denoise=denoise, callback=on_step, init_latents=video)
        sigma = float(comfy.samplers.KSampler(model, steps=4, device="cpu", sampler="euler", scheduler="normal",
                                              denoise=denoise).sigmas[0])
        expected = latent_format.process_in(video[:5]) + sigma * unit
        assert torch.allclose(starts[0][1:], expected, atol=1e-3), denoise
        assert len(count) == 4 and out.shape == (6, 4, 8, 8)
    assert sigma < 5.0  # denoise 0.4 really starts lower on the schedule (full: 14.6)
    with pytest.raises(ValueError, match="the video has 3 frames but 5 are to be generated"):
        parallel.musev_sample(model, env["positive"], env["negative"], env["condition"], 5, 0, 0, seed=3, steps=1,
                              cfg=3.5, sampler_name="euler", scheduler="normal", context_frames=4, context_overlap=1,
                              fuse_method="flat", motion_speed=8.0, w_ind_noise=0.5, img_weight=0.001, denoise=1.0,
                              init_latents=video[:3])


def test_denoise_below_one_starts_from_the_condition_noised_to_the_first_sigma(env):
    import comfy.samplers
    noise_module = comfy_env.pack_module("musev_core.noise")
    model = musev(env)
    starts = []
    sample(env, model, frames=5, steps=4, callback=lambda i, x0, x, total: starts.append(x.clone()) if i == 0 else None)
    full_start = starts[0]
    partial = []
    sample(env, model, frames=5, steps=4, denoise=0.5,
           callback=lambda i, x0, x, total: partial.append(x.clone()) if i == 0 else None)
    sigmas = comfy.samplers.KSampler(model, steps=4, device="cpu", sampler="euler", scheduler="normal",
                                     denoise=0.5).sigmas
    latent_format = model.get_model_object("latent_format")
    condition = latent_format.process_in(env["condition"].float())
    unit = noise_module.initial_noise((1, 4, 5, 8, 8), torch.Generator().manual_seed(3), "video_fusion", 0.5)
    unit = noise_module.blend_condition_into_noise(unit, condition.permute(1, 0, 2, 3)[None], 0.001)[0]
    expected = condition + float(sigmas[0]) * unit.permute(1, 0, 2, 3)
    assert float(sigmas[0]) < 14.0
    assert torch.allclose(partial[0][1:], expected, atol=1e-4)
    # full denoise starts from MuseV's noise * sigma_max, without the condition image added
    full_sigma = float(comfy.samplers.KSampler(model, steps=4, device="cpu", sampler="euler", scheduler="normal",
                                               denoise=1.0).sigmas[0])
    assert torch.allclose(full_start[1:], full_sigma * unit.permute(1, 0, 2, 3), atol=1e-3)
