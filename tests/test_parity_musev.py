"""Parity with the reference MuseV implementation (../shared/fixtures/musev_parity, `musev` flavour).

Every tensor goes through the same adapter the nodes use: the fixture's SD keys are loaded into a ComfyUI UNet built
with the fixture's geometry, its MuseV keys through `build_motion_patcher` + `apply_motion` (what LoadMuseVUNet
does), and the pipeline through `musev_sample` (what MuseVParallelDenoiseSampler does) with ComfyUI's euler sampler.
All settings come from the fixture's report.json / tiny_configs.json, so another fixture set made the same way runs
unchanged: point MUSEV_PARITY_DIR at it.
"""
import json
import os

import pytest
import safetensors.torch
import torch

import comfy_env
import tiny_models

TOLERANCE = 1e-4


def parity_dir(shared):
    return os.environ.get("MUSEV_PARITY_DIR", os.path.join(shared, "fixtures", "musev_parity"))


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|a - b| / max|b| (the fixtures' metric), in float64."""
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = float((actual - expected).abs().max() / expected.abs().max())
    if os.environ.get("MUSEV_PARITY_REPORT"):  # print every measured error (run pytest with -s)
        print(f"parity rel err {error:.2e} shape {tuple(expected.shape)}")
    return error


def comfy_config_from_diffusers(kwargs: dict) -> dict:
    """ComfyUI UNet config equivalent to MuseV's UNet3DConditionModel constructor arguments."""
    channels = kwargs["block_out_channels"]
    attention_levels = [i for i, kind in enumerate(kwargs["down_block_types"]) if "CrossAttn" in kind]
    return tiny_models.comfy_unet_config(
        channels[0], [c // channels[0] for c in channels], attention_levels, kwargs["cross_attention_dim"],
        num_res_blocks=kwargs["layers_per_block"], num_heads=kwargs["attention_head_dim"])


@pytest.fixture(scope="module")
def parity(comfy, shared_dir):
    root = parity_dir(shared_dir)
    if not os.path.isfile(os.path.join(root, "report.json")):
        pytest.fail(f"no parity fixtures in {root}")
    report = json.load(open(os.path.join(root, "report.json")))
    configs = json.load(open(os.path.join(root, "tiny_configs.json")))
    musev_model = comfy_env.pack_module("nodes.musev_model")
    unet_config = comfy_config_from_diffusers(configs["unet_musev"]["constructor_kwargs"])
    base = tiny_models.build_comfy_model(unet_config, report["scheduler"]["config"])
    weights = safetensors.torch.load_file(os.path.join(root, "tiny_unet_musev.safetensors"))
    loaded_sd_keys = tiny_models.load_diffusers_unet_weights(base, unet_config, weights)
    motion_patcher, info = musev_model.build_motion_patcher(base, weights, "tiny_unet_musev.safetensors")
    model = musev_model.apply_motion(base, motion_patcher)
    return {"root": root, "report": report, "model": model, "info": info, "sd_keys": loaded_sd_keys,
            "weights": weights}


def load(parity, name):
    return safetensors.torch.load_file(os.path.join(parity["root"], f"{name}.safetensors"))


def test_every_key_of_the_tiny_checkpoint_is_consumed(parity):
    weights = parity["weights"]
    assert parity["info"]["flavour"] == "musev"
    assert parity["info"]["musev_keys"] + parity["sd_keys"] == len(weights)
    assert parity["info"]["sd_keys_ignored"] == parity["sd_keys"]


@pytest.mark.parametrize("skip_temporal", [False, True])
def test_unet_forward_matches_reference(parity, skip_temporal):
    musev_model = comfy_env.pack_module("nodes.musev_model")
    data = load(parity, "unet_forward_musev")
    settings = parity["report"]["unet_forward_settings"]
    sample = data["sample"]
    b, c, t, h, w = sample.shape
    x = sample.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    timesteps = data["timestep"].float().expand(b * t).clone()
    context = data["encoder_hidden_states"].repeat_interleave(t, dim=0)
    window = musev_model.MuseVWindow(condition_index=data["vision_index"].tolist(), frames=list(range(t)),
                                     full_length=t, motion_speed=settings["sample_frame_rate"],
                                     skip_temporal=skip_temporal)
    out = musev_model.unet_call(parity["model"], x, timesteps, context, chunks=b, window=window)
    out = out.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
    expected = data["out_skip_temporal" if skip_temporal else "out"]
    assert rel_err(out, expected) < TOLERANCE


def test_temporal_layers_change_the_output(parity):
    """Guard against a parity pass with the temporal modules silently not running."""
    data = load(parity, "unet_forward_musev")
    assert rel_err(data["out_skip_temporal"], data["out"]) > 0.05


class _CallRecorder:
    """DIFFUSION_MODEL wrapper recording every UNet call's window, CFG chunk order and raw output."""

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
    import comfy.patcher_extension
    musev_model = comfy_env.pack_module("nodes.musev_model")
    data = load(parity, "pipeline_musev")
    settings = parity["report"]["pipeline_settings"]
    model = parity["model"].clone()
    recorder = _CallRecorder(musev_model.WINDOW_KEY)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "parity_recorder", recorder)

    return dict(run_fixture_pipeline(model, data, settings), calls=recorder.calls,
                sigmas=parity["report"]["scheduler"]["sigmas"])


def run_fixture_pipeline(model, data, settings, positive_extra=None, negative_extra=None, **kwargs) -> dict:
    """Run `musev_sample` (what the sampler node runs) with a fixture's condition, prompts and settings.

    The condition is the clean latent of `call0.sample` (unscaled, as a LATENT holds it), the prompts are
    `call0.encoder_hidden_states` ([negative; positive]); `*_extra` are merged into the cond dicts (e.g. a
    ControlNet), `kwargs` go to `musev_sample` (reference, ip_tokens). Returns data, settings, samples, per-step
    `x`/`denoised`, n_vis and the latent format.
    """
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    latent_format = model.get_model_object("latent_format")
    n_vis = settings["n_vision_condition"]
    clean = data["call0.sample"][0, :, :n_vis].permute(1, 0, 2, 3)  # (n_vis, c, h, w)
    condition = clean / latent_format.scale_factor  # LATENT holds unscaled VAE latents
    embeddings = data["call0.encoder_hidden_states"]  # [negative; positive]
    positive = [[embeddings[1:2], dict(positive_extra or {})]]
    negative = [[embeddings[0:1], dict(negative_extra or {})]]
    steps = []

    def on_step(step, x0, x, total):
        steps.append({"x": x.detach().clone(), "denoised": x0.detach().clone()})

    samples = parallel.musev_sample(
        model, positive, negative, condition, frames=settings["video_length"], width=0, height=0,
        seed=settings["generator_seed"], steps=settings["num_inference_steps"], cfg=settings["guidance_scale"],
        sampler_name="euler", scheduler="normal", context_frames=settings["context_frames"],
        context_overlap=settings["context_overlap"], fuse_method="flat", motion_speed=settings["motion_speed"],
        w_ind_noise=settings["w_ind_noise"], img_weight=settings["img_weight"], denoise=1.0,
        noise_type=settings["noise_type"], callback=on_step, **kwargs)
    return {"data": data, "settings": settings, "steps": steps, "samples": samples, "n_vis": n_vis,
            "latent_format": latent_format}


def test_pipeline_windows_match_reference(parity, pipeline_run):
    n_vis = pipeline_run["n_vis"]
    expected = [window for batch in parity["report"]["pipeline_musev"]["windows"] for window in batch]
    steps = parity["report"]["pipeline_settings"]["num_inference_steps"]
    calls = pipeline_run["calls"]
    assert len(calls) == len(expected) * steps
    for i, call in enumerate(calls):
        window = expected[i % len(expected)]
        assert call["frames"] == list(range(n_vis)) + [n_vis + f for f in window]


def assert_first_call_matches(run: dict, check_input: bool = True) -> None:
    """The first recorded UNet call's input (optional) and raw output match `call0.sample` / `call0.noise_pred_raw`."""
    data, call = run["data"], run["calls"][0]
    b, c, t, h, w = data["call0.sample"].shape
    by_chunk = dict(zip(call["chunks"], call["x"].reshape(len(call["chunks"]), t, c, h, w)))
    out_by_chunk = dict(zip(call["chunks"], call["out"].reshape(len(call["chunks"]), t, c, h, w)))
    # the UNet saw [clean condition ; scaled window latents]: compare the scaled input
    for half, chunk in ((0, 1), (1, 0)):  # fixture order [uncond, cond]; ComfyUI 0 = cond, 1 = uncond
        if check_input:
            assert rel_err(by_chunk[chunk].permute(1, 0, 2, 3), data["call0.sample"][half]) < TOLERANCE
        assert rel_err(out_by_chunk[chunk].permute(1, 0, 2, 3), data["call0.noise_pred_raw"][half]) < TOLERANCE


def test_pipeline_first_call_matches_reference(pipeline_run):
    assert_first_call_matches(pipeline_run)
    data, call = pipeline_run["data"], pipeline_run["calls"][0]
    assert float(call["t"][0]) == pytest.approx(float(data["call0.timestep"][0]))


def fused_cfg_eps(step_calls, n_vis: int, frames: int, guidance: float) -> torch.Tensor:
    """Window predictions of one step averaged per frame, then CFG, from the recorded raw UNet outputs.

    Returns `(frames, c, h, w)` float64.
    """
    shape = step_calls[0]["out"].shape[1:]
    sums = {0: torch.zeros(frames, *shape, dtype=torch.float64), 1: torch.zeros(frames, *shape, dtype=torch.float64)}
    counts = torch.zeros(frames, dtype=torch.float64)
    for call in step_calls:
        window = [f - n_vis for f in call["frames"][n_vis:]]
        out = call["out"].double().reshape(len(call["chunks"]), -1, *shape)
        for chunk, pred in zip(call["chunks"], out):
            sums[chunk][window] += pred[n_vis:]
        counts[window] += 1
    eps_cond, eps_uncond = (sums[k] / counts[:, None, None, None] for k in (0, 1))
    return eps_uncond + guidance * (eps_cond - eps_uncond)


def assert_steps_match(run: dict) -> None:
    """Latents before every step and the fused CFG eps of every step (from the recorded UNet calls) match."""
    data, n_vis, settings = run["data"], run["n_vis"], run["settings"]
    calls, steps = run["calls"], run["steps"]
    num_steps = settings["num_inference_steps"]
    assert len(steps) == num_steps
    per_step = len(calls) // num_steps
    for i in range(num_steps):
        x = steps[i]["x"][n_vis:].permute(1, 0, 2, 3)[None]
        assert rel_err(x, data[f"step{i}.latents_in"]) < TOLERANCE, f"latents before step {i}"
        eps = fused_cfg_eps(calls[i * per_step:(i + 1) * per_step], n_vis, settings["video_length"],
                            settings["guidance_scale"])
        assert rel_err(eps.permute(1, 0, 2, 3)[None], data[f"step{i}.noise_pred_cfg"]) < TOLERANCE, \
            f"noise_pred_cfg of step {i}"


def final_latents(run: dict) -> torch.Tensor:
    """The run's output in the fixture's layout: model-space latents `1 c (n_vis + L) h w`."""
    return run["latent_format"].process_in(run["samples"]).permute(1, 0, 2, 3)[None]


def test_pipeline_per_step_tensors_match_reference(pipeline_run):
    assert_steps_match(pipeline_run)
    data, n_vis, steps = pipeline_run["data"], pipeline_run["n_vis"], pipeline_run["steps"]
    for i, step in enumerate(steps):
        # the sampler's denoised estimate is x - sigma * eps with the fused, guided eps
        x = step["x"][n_vis:].permute(1, 0, 2, 3)[None]
        sigma = pipeline_run["sigmas"][i]
        denoised = step["denoised"][n_vis:].permute(1, 0, 2, 3)[None]
        expected_eps = data[f"step{i}.noise_pred_cfg"]
        assert rel_err(denoised, x.double() - sigma * expected_eps.double()) < TOLERANCE


def test_pipeline_final_latents_match_reference(pipeline_run):
    data, n_vis = pipeline_run["data"], pipeline_run["n_vis"]
    assert rel_err(final_latents(pipeline_run), data["final_latents"]) < TOLERANCE
    # the condition frame comes back exactly as it went in
    condition = pipeline_run["samples"][:n_vis]
    expected = data["call0.sample"][0, :, :n_vis].permute(1, 0, 2, 3) / pipeline_run["latent_format"].scale_factor
    assert torch.equal(condition, expected)
