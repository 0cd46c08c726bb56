"""Parity with MusePose's reference code (../shared/fixtures/musepose_parity) through the ComfyUI adapter.

Every tensor goes through the code the nodes run: `load_denoising_model` (Load MusePose), `load_reference_unet` +
`encode_reference` (MusePose Reference Encode), `pose_features` and the MODEL's patched UNet. Settings come from the
set's report.json / tiny_configs.json (MUSEPOSE_PARITY_DIR, default ../shared/fixtures/musepose_parity), so another
set made the same way runs unchanged. Metric: max|a - b| / max|b|, float32, 1e-4 (the float16-rounded bank at one
float16 ulp, as the set's README says).
"""
import json
import os

import pytest
import safetensors.torch
import torch

import comfy_env

TOLERANCE = 1e-4
#: `bank_read.*` is a float16 rounding: a ~1e-5 float32 difference can move an element by one float16 ulp.
FLOAT16_ULP_TOLERANCE = 1e-3


def parity_dir(shared):
    return os.environ.get("MUSEPOSE_PARITY_DIR", os.path.join(shared, "fixtures", "musepose_parity"))


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double().cpu(), expected.double().cpu()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = float((actual - expected).abs().max() / expected.abs().max())
    if os.environ.get("MUSEV_PARITY_REPORT"):
        print(f"parity rel err {error:.2e} shape {tuple(expected.shape)}")
    return error


def to_frames(video: torch.Tensor) -> torch.Tensor:
    """`b c f h w` -> `(b f) c h w`."""
    b, c, f, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def to_video(frames: torch.Tensor, b: int) -> torch.Tensor:
    bf, c, h, w = frames.shape
    return frames.reshape(b, bf // b, c, h, w).permute(0, 2, 1, 3, 4)


@pytest.fixture(scope="module")
def parity(comfy, shared_dir):
    root = parity_dir(shared_dir)
    if not os.path.isfile(os.path.join(root, "report.json")):
        pytest.fail(f"no MusePose parity fixtures in {root}")
    report = json.load(open(os.path.join(root, "report.json")))
    configs = json.load(open(os.path.join(root, "tiny_configs.json")))
    adapter = comfy_env.pack_module("nodes.musepose_model")
    groups = configs["denoising_unet"]["base_unet_config_json"]["norm_num_groups"]
    path = lambda name: os.path.join(root, f"tiny_{name}.safetensors")
    model, info = adapter.load_denoising_model(path("denoising_unet"), path("motion_module"), path("pose_guider"),
                                               norm_num_groups=groups)
    reference, reference_info = comfy_env.pack_module("nodes.musepose_reference").load_reference_unet(path("reference_unet"), norm_num_groups=groups)
    return {"root": root, "report": report, "configs": configs, "model": model, "info": info,
            "reference": reference, "reference_info": reference_info, "adapter": adapter}


def load(parity, name):
    return safetensors.torch.load_file(os.path.join(parity["root"], f"{name}.safetensors"))


def bank_from(parity, data, prefix="bank_read"):
    """The fixture's bank (cond half) as the adapter's typed value, keyed by block path (report bank_pairs)."""
    adapter = parity["adapter"]
    features = {}
    for pair in parity["report"]["bank_pairs"]:
        assert pair["reader"] == pair["writer"]
        features[pair["reader"]] = data[f"{prefix}.{pair['bank_index']}"][1:2]
    h, w = data["ref_image_latents"].shape[-2:]
    return adapter.MusePoseReference(features, (h, w))


def test_every_key_of_the_tiny_checkpoints_is_consumed(parity):
    counts = parity["report"]["key_counts"]
    info = parity["info"]
    assert info["unet_keys"] == counts["denoising_unet"]
    assert info["motion_keys"] + info["motion_pe_keys_ignored"] == counts["motion_module"]
    assert info["motion_pe_keys_ignored"] == counts["motion_module_pe_buffers"]
    assert info["pose_guider_keys"] == counts["pose_guider"]
    assert parity["reference_info"]["reference_keys"] == counts["reference_unet"]
    assert info["motion_modules"] == 21


def test_full_size_unet_layouts_are_the_released_ones(parity, shared_dir):
    """ComfyUI's SD1.5 UNet, through the adapter's key conversion, has exactly the released files' keys and shapes."""
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    adapter = parity["adapter"]
    keys = json.load(open(os.path.join(shared_dir, "fixtures", "checkpoint_keys", "musepose_keys.json")))
    geometry = {"in_channels": 4, "model_channels": 320, "block_out_channels": [320, 640, 1280, 1280],
                "layers_per_block": 2, "attention_levels": [0, 1, 2], "context_dim": 768, "transformer_depth": 1,
                "linear_projection": False}
    config = adapter.comfy_unet_config(geometry)
    unet = UNetModel(**config, device="meta")
    comfy_shapes = {k: list(v.shape) for k, v in unet.state_dict().items()}
    mapping = comfy.utils.unet_to_diffusers(config)
    converted = {d: comfy_shapes[c] for d, c in mapping.items() if c in comfy_shapes}
    assert converted == keys["denoising_unet"]
    head = {"conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"}
    assert {k: v for k, v in converted.items() if k not in head} == keys["reference_unet"]


def test_pose_features_match_reference(parity):
    data = load(parity, "pipeline")
    pose = data["pose_images"][0].permute(1, 2, 3, 0) / 255  # IMAGE: L H W 3 in [0, 1]
    features = parity["adapter"].pose_features(parity["model"], pose)
    assert rel_err(features, data["pose_fea"][0].permute(1, 0, 2, 3)) < TOLERANCE


@pytest.mark.parametrize("fixture_file", ["unet_forward", "pipeline"])
def test_reference_bank_matches_reference(parity, fixture_file):
    adapter = parity["adapter"]
    data = load(parity, fixture_file)
    context = data["clip_image_embeds"][:, None]  # one token, the cond half of [zeros; embeds]
    exact = comfy_env.pack_module("nodes.musepose_reference").encode_reference(parity["reference"], data["ref_image_latents"], context,
                                     round_to_float16=False)
    rounded = comfy_env.pack_module("nodes.musepose_reference").encode_reference(parity["reference"], data["ref_image_latents"], context)
    assert exact.latent_hw == tuple(data["ref_image_latents"].shape[-2:])
    for pair in parity["report"]["bank_pairs"]:
        name, index = pair["writer"], pair["bank_index"]
        assert exact.features[name].dtype == torch.float32 and rounded.features[name].dtype == torch.float16
        assert rel_err(exact.features[name], data[f"bank.{index}"][1:2]) < TOLERANCE
        if fixture_file == "unet_forward":
            assert rel_err(rounded.features[name], data[f"bank_read.{index}"][1:2]) < FLOAT16_ULP_TOLERANCE
    assert len(exact.features) == len(parity["report"]["bank_pairs"])


def run_unet_forward(parity, data, bank=True, pose=True, skip_motion=False):
    adapter = parity["adapter"]
    sample = data["sample"]
    b, c, t, h, w = sample.shape
    conditioning = adapter.MusePoseConditioning(pose=to_frames(data["pose_fea"]) if pose else None,
                                                bank=bank_from(parity, data) if bank else None)
    window = adapter.MusePoseWindow(frames=list(range(t)), full_length=t, conditioning=conditioning,
                                    skip_motion=skip_motion)
    timesteps = data["timestep"].float().expand(b * t).clone()
    context = data["encoder_hidden_states"].repeat_interleave(t, dim=0)
    out = adapter.unet_call(parity["model"], to_frames(sample), timesteps, context, chunk_codes=[1, 0],
                            window=window)  # fixture batch order [uncond, cond]; ComfyUI codes 1 = uncond, 0 = cond
    return to_video(out, b)


@pytest.mark.parametrize("variant,kwargs", [("out", {}), ("out_no_motion", {"skip_motion": True}),
                                            ("out_no_ref", {"bank": False}), ("out_no_pose", {"pose": False})])
def test_unet_forward_matches_reference(parity, variant, kwargs):
    data = load(parity, "unet_forward")
    if variant not in data:
        pytest.skip(f"{variant} not in this fixture set")
    out = run_unet_forward(parity, data, **kwargs)
    assert rel_err(out, data[variant]) < TOLERANCE


def test_uncond_half_never_sees_the_reference(parity):
    data = load(parity, "unet_forward")
    with_bank, without = run_unet_forward(parity, data), run_unet_forward(parity, data, bank=False)
    assert torch.equal(with_bank[0], without[0])
    assert rel_err(with_bank[1], without[1]) > 1e-2
    assert rel_err(data["out_no_motion"], data["out"]) > 0.05  # the motion modules matter in this set


class _CallRecorder:
    """DIFFUSION_MODEL wrapper recording every UNet call's window, chunk order, input, timestep and raw output."""

    def __init__(self, window_key):
        self.window_key = window_key
        self.calls = []

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        out = executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        window = transformer_options.get(self.window_key)
        self.calls.append({"frames": list(window.frames), "chunks": list(transformer_options["cond_or_uncond"]),
                           "x": x.detach().clone(), "out": out.detach().clone(), "t": timesteps.detach().clone()})
        return out


@pytest.fixture(scope="module")
def pipeline_run(parity):
    """The fixture's pipeline call through `musepose_sample` (what the sampler node runs), with MusePose's DDIM."""
    import comfy.patcher_extension
    adapter = parity["adapter"]
    sampling = comfy_env.pack_module("nodes.musepose_sampling")
    data = load(parity, "pipeline")
    settings = parity["report"]["settings"]
    model = parity["model"].clone()
    recorder = _CallRecorder(adapter.WINDOW_KEY)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "parity_recorder", recorder)
    embeds = data["clip_image_embeds"][:, None]
    positive, negative = [[embeds, {}]], [[torch.zeros_like(embeds), {}]]
    reference = comfy_env.pack_module("nodes.musepose_reference").encode_reference(parity["reference"], data["ref_image_latents"], embeds)
    pose = adapter.pose_features(model, data["pose_images"][0].permute(1, 2, 3, 0) / 255)
    sampler, sigmas = sampling.sampler_and_sigmas(model, sampling.MUSEPOSE_SAMPLER, sampling.MUSEPOSE_SCHEDULER,
                                                  settings["steps"])
    steps = []

    def on_step(step, x0, x, total):
        steps.append({"x": x.detach().clone(), "denoised": x0.detach().clone()})

    # the fixture calls the pipeline directly, so its windows wrap around: no padding here
    samples = sampling.musepose_sample(model, positive, negative, pose, reference, settings["pipeline_seed"], sampler,
                                       sigmas, settings["guidance"], settings["context_frames"],
                                       settings["context_overlap"], pad_to_windows=False, callback=on_step)
    return {"data": data, "calls": recorder.calls, "steps": steps, "samples": samples, "sigmas": sigmas,
            "latent_format": model.get_model_object("latent_format"), "settings": settings}


def test_pipeline_timesteps_and_windows_match_reference(parity, pipeline_run):
    report = parity["report"]["pipeline"]
    calls = pipeline_run["calls"]
    windows = [w for step in report["windows_per_step"] for w in step]
    assert len(calls) == len(windows)
    for call, window, timestep in zip(calls, windows, [t for t, step in zip(report["timesteps"],
                                                                             report["windows_per_step"])
                                                        for _ in step]):
        assert call["frames"] == window
        assert torch.all(call["t"] == float(timestep))


def test_pipeline_every_unet_call_matches_reference(pipeline_run):
    """Each call's input (both CFG halves) and raw output `[v_uncond; v_cond]` match `call{k}.*`."""
    data, calls = pipeline_run["data"], pipeline_run["calls"]
    for k, call in enumerate(calls):
        b, c, t, h, w = data[f"call{k}.sample"].shape
        x = dict(zip(call["chunks"], call["x"].reshape(len(call["chunks"]), t, c, h, w)))
        out = dict(zip(call["chunks"], call["out"].reshape(len(call["chunks"]), t, c, h, w)))
        for half, chunk in ((0, 1), (1, 0)):  # fixture [uncond, cond]; ComfyUI 1 = uncond, 0 = cond
            assert rel_err(x[chunk].permute(1, 0, 2, 3), data[f"call{k}.sample"][half]) < TOLERANCE, k
            assert rel_err(out[chunk].permute(1, 0, 2, 3), data[f"call{k}.out"][half]) < TOLERANCE, k


def test_pipeline_initial_noise_is_musepose_noise(pipeline_run):
    first = pipeline_run["steps"][0]
    sigma = float(pipeline_run["sigmas"][0])
    noise = first["x"] / (1 + sigma ** 2) ** 0.5  # ComfyUI's x = x_vp * sqrt(1 + sigma^2)
    assert rel_err(noise.permute(1, 0, 2, 3)[None], pipeline_run["data"]["step0.latents_in"]) < 1e-6


def test_pipeline_per_step_and_final_latents_match_reference(pipeline_run):
    data, steps, sigmas = pipeline_run["data"], pipeline_run["steps"], pipeline_run["sigmas"]
    n = pipeline_run["settings"]["steps"]
    assert len(steps) == n
    for i, step in enumerate(steps):
        x_vp = step["x"] / (1 + float(sigmas[i]) ** 2) ** 0.5
        assert rel_err(x_vp.permute(1, 0, 2, 3)[None], data[f"step{i}.latents_in"]) < TOLERANCE, i
        # ComfyUI's x0 after averaging and CFG is DDIM's pred_original_sample
        assert rel_err(step["denoised"].permute(1, 0, 2, 3)[None], data[f"step{i}.pred_original_sample"]) \
            < TOLERANCE, i
    final = pipeline_run["latent_format"].process_in(pipeline_run["samples"])  # LATENT -> model space
    assert rel_err(final.permute(1, 0, 2, 3)[None], data["final_latents"]) < TOLERANCE
    assert rel_err(final.permute(1, 0, 2, 3)[None], data[f"step{n - 1}.latents_out"]) < TOLERANCE
