"""Fractional timesteps (issue 10 §1): a MuseV MODEL's UNet and ControlNet see MuseV's exact timesteps.

MuseV's diffusers Euler scheduler (timestep_spacing "linspace") feeds the UNet `linspace(999, 0, steps)`: with SD1.5
betas 3 steps are 999, 499.5, 0 and 20 steps 999, 946.42..., where ComfyUI's discrete model sampling would round to
the nearest training timestep. The tiny case here: the parity fixture's `musev` UNet (weights from
../shared/fixtures/musev_parity) on SD1.5's scaled-linear betas, run by the pack's sampler with ComfyUI's euler /
normal, every UNet call recorded. The reference for a recorded call is the same UNet evaluated at MuseV's exact
timestep (`unet_call`), which must agree to 1e-5, while the rounded timestep is off by more than the 1e-4 parity bar.
"""
import json
import os

import pytest
import safetensors.torch
import torch

import comfy_env
import tiny_models
from test_parity_musev import comfy_config_from_diffusers, parity_dir, rel_err, run_fixture_pipeline
from test_parity_referencenet import unet_call_chunks

#: SD1.5's training schedule in diffusers' terms (scaled_linear betas 0.00085 .. 0.012).
SD15_SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                 "num_train_timesteps": 1000}


def musev_timesteps(steps: int) -> torch.Tensor:
    """diffusers EulerDiscreteScheduler timesteps, timestep_spacing "linspace" (MuseV): float64 `(steps,)`."""
    return torch.linspace(999, 0, steps, dtype=torch.float64)


@pytest.fixture(scope="module")
def sd15(comfy, shared_dir):
    root = parity_dir(shared_dir)
    report = json.load(open(os.path.join(root, "report.json")))
    configs = json.load(open(os.path.join(root, "tiny_configs.json")))
    musev_model = comfy_env.pack_module("nodes.musev_model")
    unet_config = comfy_config_from_diffusers(configs["unet_musev"]["constructor_kwargs"])
    base = tiny_models.build_comfy_model(unet_config, SD15_SCHEDULE)
    weights = safetensors.torch.load_file(os.path.join(root, "tiny_unet_musev.safetensors"))
    tiny_models.load_diffusers_unet_weights(base, unet_config, weights)
    motion_patcher, _info = musev_model.build_motion_patcher(base, weights, "tiny_unet_musev.safetensors")
    data = safetensors.torch.load_file(os.path.join(root, "pipeline_musev.safetensors"))
    return {"root": root, "base": base, "motion": motion_patcher,
            "model": musev_model.apply_motion(base, motion_patcher),
            "data": data, "settings": dict(report["pipeline_settings"]),
            "report_windows": [w for batch in report["pipeline_musev"]["windows"] for w in batch]}


class _Recorder:
    """DIFFUSION_MODEL wrapper keeping every call's inputs, options and output."""

    def __init__(self):
        self.calls = []

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        out = executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        self.calls.append({"x": x.detach().clone(), "t": timesteps.detach().clone(), "context": context.clone(),
                           "chunks": list(transformer_options["cond_or_uncond"]), "out": out.detach().clone(),
                           "window": transformer_options.get("musev_window")})
        return out


def _recorded_run(sd15, model, steps: int, frames: int | None = None, **extra):
    """The fixture's pipeline settings at `steps` steps (and `frames` generated frames: fewer = one window, faster);
    returns the recorded UNet calls grouped by step, and the run."""
    import comfy.patcher_extension
    model = model.clone()
    recorder = _Recorder()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_recorder", recorder)
    settings = dict(sd15["settings"], num_inference_steps=steps)
    if frames is not None:
        settings["video_length"] = frames
    run = run_fixture_pipeline(model, sd15["data"], settings, **extra)
    per_step = len(recorder.calls) // steps
    assert per_step * steps == len(recorder.calls) and per_step >= 1
    return [recorder.calls[i * per_step:(i + 1) * per_step] for i in range(steps)], run


def _timesteps_seen(per_step) -> list[torch.Tensor]:
    seen = []
    for calls in per_step:
        values = torch.cat([call["t"].double() for call in calls])
        assert float(values.max() - values.min()) < 1e-6  # one timestep per step, condition frames included
        seen.append(values[0])
    return seen


def test_continuous_timestep_inverts_comfy_sigma_at_musev_timesteps(sd15):
    timesteps = comfy_env.pack_module("nodes.timesteps")
    import comfy.samplers
    sampling = sd15["base"].get_model_object("model_sampling")
    for steps in (3, 20):
        sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", steps)[:-1]
        exact = timesteps.continuous_timestep(sigmas, sampling.log_sigmas)
        assert exact.dtype == torch.float32 and exact.shape == sigmas.shape
        assert float((exact.double() - musev_timesteps(steps)).abs().max()) < 1e-3
        # and back: ComfyUI's own sigma(t) of the recovered timesteps is the sampler's sigma
        assert float(((sampling.sigma(exact) - sigmas) / sigmas).abs().max()) < 1e-5
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", 3)[:-1]
    assert float(timesteps.continuous_timestep(sigmas, sampling.log_sigmas)[1]) == pytest.approx(499.5, abs=1e-3)
    assert float(sampling.timestep(sigmas)[1]) in (499.0, 500.0)  # what ComfyUI alone would feed the UNet
    # outside the table: clamped like ComfyUI's timestep
    edges = timesteps.continuous_timestep(torch.tensor([1e-6, 1e6]), sampling.log_sigmas)
    assert edges.tolist() == [0.0, 999.0]


@pytest.mark.parametrize("steps, frames", [(3, None), (20, 2)])  # 20 steps: one short window per step
def test_unet_sees_musev_fractional_timesteps(sd15, steps, frames):
    per_step, _run = _recorded_run(sd15, sd15["model"], steps, frames)
    assert len(per_step[0]) == (1 if frames else len(sd15["report_windows"]))
    seen = torch.stack(_timesteps_seen(per_step))
    expected = musev_timesteps(steps)
    assert float((seen - expected).abs().max()) < 1e-3, (seen.tolist(), expected.tolist())
    if steps == 3:
        assert abs(float(seen[1]) - 499.5) < 1e-3
    else:
        assert abs(float(seen[1]) - 946.4210526) < 1e-3


def test_recorded_unet_output_is_the_unet_at_the_exact_timestep(sd15):
    """Fixture-style: the sampler's call at step 1 equals the UNet at MuseV's 499.5, not at the rounded 500/499."""
    musev_model = comfy_env.pack_module("nodes.musev_model")
    per_step, _run = _recorded_run(sd15, sd15["model"], 3, frames=2)
    call = per_step[1][0]
    n = call["x"].shape[0]

    def at(t: float):
        return unet_call_chunks(musev_model, sd15["model"], call["x"], torch.full((n,), t), call["context"],
                                call["chunks"], call["window"])

    assert rel_err(call["out"], at(499.5)) < 1e-5
    assert rel_err(call["out"], at(500.0)) > 1e-4
    assert rel_err(call["out"], at(499.0)) > 1e-4


def _model_sampling_node(model, sampling="eps"):
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
    return ModelSamplingDiscrete().patch(model, sampling, False)[0]


def test_a_user_model_sampling_patch_keeps_the_timesteps_continuous(sd15):
    musev_model = comfy_env.pack_module("nodes.musev_model")
    after = _model_sampling_node(sd15["model"])          # ModelSamplingDiscrete after Load MuseV UNet
    before = musev_model.apply_motion(_model_sampling_node(sd15["base"]), sd15["motion"])  # ... and before it
    for model in (after, before):
        assert model.get_model_object("model_sampling") is not sd15["base"].model.model_sampling
        seen = _timesteps_seen(_recorded_run(sd15, model, 3, frames=2)[0])
        assert abs(float(seen[1]) - 499.5) < 1e-2  # the node's own SD1.5 table, computed by ComfyUI


def test_other_model_samplings_and_other_models_are_left_alone(sd15):
    import comfy.patcher_extension
    import comfy.sample
    timesteps = comfy_env.pack_module("nodes.timesteps")
    lcm = _model_sampling_node(sd15["base"], "lcm").get_model_object("model_sampling")
    assert timesteps.is_discrete(sd15["base"].get_model_object("model_sampling"))
    assert not timesteps.is_discrete(lcm)  # distilled timesteps are not the plain discrete rounding
    # a plain SD MODEL (no MuseV) still gets ComfyUI's rounded timesteps
    plain = sd15["base"].clone()
    recorder = _Recorder()
    plain.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_recorder", recorder)
    embeddings = sd15["data"]["call0.encoder_hidden_states"]
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    comfy.sample.sample(plain, noise, 3, 3.5, "euler", "normal", [[embeddings[1:2], {}]], [[embeddings[0:1], {}]],
                        torch.zeros_like(noise), disable_pbar=True, seed=0)
    assert [float(call["t"][0]) for call in recorder.calls][1] in (499.0, 500.0)


def test_controlnet_sees_the_fractional_timesteps(sd15):
    from test_parity_controlnet import build_fixture_controlnet
    control = build_fixture_controlnet(sd15["root"])
    data = safetensors.torch.load_file(os.path.join(sd15["root"], "pipeline_musev_referencenet_controlnet.safetensors"))
    hints = torch.cat([data["controlnet_condition_image"], data["control_frames"]], dim=2)[0].permute(1, 0, 2, 3) / 255
    control = control.copy().set_cond_hint(hints[:3], 1.0, (0.0, 1.0))  # condition + 2 generated frames
    seen = []
    hook = control.control_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["timesteps"].detach().clone()), with_kwargs=True)
    try:
        per_step, _run = _recorded_run(sd15, sd15["model"], 3, frames=2, positive_extra={"control": control},
                                       negative_extra={"control": control})
    finally:
        hook.remove()
    per_call = len(seen) // len(per_step)
    assert per_call * len(per_step) == len(seen) and per_call >= 1
    for step, expected in enumerate(musev_timesteps(3)):
        values = torch.cat(seen[step * per_call:(step + 1) * per_call]).double()
        assert float((values - expected).abs().max()) < 1e-3, (step, values.tolist())
    assert control.model_sampling_current is None  # restored, then cleaned up by ComfyUI after sampling
