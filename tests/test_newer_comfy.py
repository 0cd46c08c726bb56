"""Newer ComfyUI (0.38.x) behaviours that cannot run here, checked with stand-ins on the CPU host (issue 10 §3).

- ControlNet hints: newer ComfyUI caches the prepared hint in `cond_hints`, keyed by the latent size only; a
  stand-in ControlBase caching the same way proves that every window still gets its own frames' hints.
- Core MultiGPU (`match_multigpu_clones`): a MODEL carrying "multigpu" clones is refused with a clear message at
  Load MuseV UNet, in the MuseV sampler and in any other sampler, before core would try to deep-clone the motion
  modules.
- `unet_call` loads the MuseV motion modules (the MODEL's additional models) the way sampling does.
"""
import pytest
import torch

import comfy_env
from test_adapter_inprocess import env, musev, sample  # noqa: F401  (module fixture)

MULTIGPU_MESSAGE = ("MuseV runs on one GPU, but this MODEL is set up for ComfyUI's MultiGPU with 1 extra device\\(s\\) "
                    "\\(cpu\\): remove the MultiGPU node")


def _caching_control_class():
    import comfy.controlnet

    class CachingLikeNewestComfy(comfy.controlnet.ControlBase):
        """get_control prepares the hint once per latent (h, w) and keeps it in `cond_hints`, like ComfyUI 0.38's
        ControlNet; no control model (returns no residuals), records the hint values each call used."""

        def __init__(self):
            super().__init__()
            self.cond_hints = {}
            self.used = []

        def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
            key = (x_noisy.shape[2], x_noisy.shape[3])
            hint = self.cond_hints.get(key)
            if hint is None:
                hint = self.cond_hint_original.clone()
                self.cond_hints[key] = hint
            self.used.append([round(float(v) * 100) for v in hint[:, 0, 0, 0]])
            return None

    return CachingLikeNewestComfy


def test_the_stand_in_caches_like_newest_comfy(comfy):
    control = _caching_control_class()()
    x = torch.zeros(2, 4, 8, 8)
    control.cond_hint_original = torch.zeros(2, 3, 64, 64)
    control.get_control(x, None, {}, 1, {})
    control.cond_hint_original = torch.ones(2, 3, 64, 64)
    control.get_control(x, None, {}, 1, {})
    assert control.used == [[0, 0], [0, 0]]  # resetting cond_hint_original alone does not rebuild the hint


def test_each_window_gets_its_own_hints_with_a_size_keyed_hint_cache(env):  # noqa: F811
    control = _caching_control_class()()
    frames, total = 7, 8
    hints = torch.arange(total, dtype=torch.float32).reshape(total, 1, 1, 1).expand(total, 3, 64, 64) / 100
    control.cond_hint_original = hints
    own_cache = control.cond_hints
    positive = [[env["positive"][0][0], dict(env["positive"][0][1], control=control)]]
    negative = [[env["negative"][0][0], dict(env["negative"][0][1], control=control)]]
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    with torch.inference_mode():
        parallel.musev_sample(musev(env), positive, negative, env["condition"], frames, 0, 0, seed=3, steps=2,
                              cfg=3.5, sampler_name="euler", scheduler="normal", context_frames=4, context_overlap=1,
                              fuse_method="flat", motion_speed=8.0, w_ind_noise=0.5, img_weight=0.001, denoise=1.0)
    # windows [0-3], [3-6] of the generated frames, condition hint first, at both steps
    assert control.used == [[0, 1, 2, 3, 4], [0, 4, 5, 6, 7]] * 2
    assert control.cond_hints is own_cache and own_cache == {}  # the control's own cache is back, untouched
    assert torch.equal(control.cond_hint_original, hints)


def _with_multigpu_clone(model):
    clone = model.clone()
    clone.set_additional_models("multigpu", [model.clone()])
    return clone


def test_core_multigpu_is_refused_with_what_to_change(env):  # noqa: F811
    import comfy.sample
    model = musev(env)
    with pytest.raises(ValueError, match=MULTIGPU_MESSAGE):
        sample(env, _with_multigpu_clone(model))
    # any sampler: the check runs before core's prepare_sampling would deep-clone the motion modules
    noise = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match=MULTIGPU_MESSAGE):
        comfy.sample.sample(_with_multigpu_clone(model), noise, 1, 1.0, "euler", "normal", env["positive"],
                            env["negative"], noise, disable_pbar=True, seed=0)
    # Load MuseV UNet on a MODEL already set up for MultiGPU
    with pytest.raises(ValueError, match=MULTIGPU_MESSAGE):
        musev(env, _with_multigpu_clone(env["model"]))


def test_unet_call_loads_the_motion_modules_like_sampling(env):  # noqa: F811
    import comfy.model_management
    musev_model = comfy_env.pack_module("nodes.musev_model")
    model = musev(env)
    motion = model.get_additional_models_with_key(musev_model.KEY)[0]
    comfy.model_management.unload_all_models()
    assert not any(loaded.model is motion for loaded in comfy.model_management.current_loaded_models)
    frames = 3
    x = torch.randn(2 * frames, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.cat([env["positive"][0][0], env["negative"][0][0]]).repeat_interleave(frames, dim=0)
    window = musev_model.MuseVWindow(condition_index=[0], frames=list(range(frames)), full_length=frames)
    out = musev_model.unet_call(model, x, torch.full((2 * frames,), 500.0), context, 2, window)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert any(loaded.model is motion for loaded in comfy.model_management.current_loaded_models)
    assert any(loaded.model is model for loaded in comfy.model_management.current_loaded_models)
