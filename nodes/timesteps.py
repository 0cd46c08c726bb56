"""Fractional timesteps for MuseV MODELs: the UNet (and a ControlNet) see the exact timestep of every sigma.

ComfyUI's discrete model sampling hands the UNet the NEAREST training timestep of a sigma
(`ModelSamplingDiscrete.timestep`: argmin over the training log-sigmas). MuseV's diffusers Euler scheduler hands it
the exact, often fractional, timestep of its linspace schedule (SD1.5 betas, 3 steps: 999, 499.5, 0). ComfyUI's own
`ModelSamplingDiscrete.sigma(t)` interpolates log-sigma linearly between neighbouring training timesteps, so its
inverse recovers those fractional timesteps from the sampler's sigmas, whatever scheduler produced them.

Extension points (all keyed "musev_timesteps", added by `apply_motion` to MuseV MODELs only):
- an `APPLY_MODEL` wrapper reads the model sampling the MODEL carries at call time (a ModelSamplingDiscrete patch
  applied before or after Load MuseV UNet included) and puts the continuous timesteps of the call's sigmas into
  `transformer_options`;
- a `DIFFUSION_MODEL` wrapper gives those to the UNet instead of the rounded ones;
- a `CALC_COND_BATCH` wrapper lets ControlNets of the conds compute their own timestep the same way: for the
  duration of the batch their `model_sampling_current` is a view of the same model sampling whose `timestep` is
  continuous (everything else delegates to the original object).
Model samplings that are not plain discrete ones (flow, EDM, LCM's distilled timesteps...) are left alone.
"""
from __future__ import annotations

import torch

import comfy.model_sampling
import comfy.patcher_extension

KEY = "musev_timesteps"
#: transformer_options entry: `(b t)` float32 continuous timesteps of the current apply_model call.
TIMESTEPS_KEY = "musev_continuous_timesteps"


def continuous_timestep(sigma: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """Inverse of ComfyUI's `ModelSamplingDiscrete.sigma(t)` (log-sigma interpolation between training steps).

    Args:
        sigma: sigmas, any shape (k-diffusion units, i.e. `sqrt((1 - a) / a)`).
        log_sigmas: `(T,)` increasing log-sigmas of the T training timesteps (`model_sampling.log_sigmas`).
    Returns:
        float32 timesteps in `[0, T - 1]`, same shape and device as `sigma`: `i + w` where
        `log_sigmas[i] <= log(sigma) <= log_sigmas[i + 1]` and `w` the linear weight between them. Sigmas outside
        the table clamp to 0 / T - 1, like ComfyUI's own timestep (diffusers EulerDiscreteScheduler linspace
        timesteps come back exactly: 499.5 for SD1.5 betas at 3 steps).
    """
    table = log_sigmas.detach().to(device=sigma.device, dtype=torch.float64)
    log_sigma = sigma.detach().to(torch.float64).clamp(min=1e-30).log()
    log_sigma = log_sigma.clamp(min=table[0], max=table[-1])
    low = torch.searchsorted(table, log_sigma.reshape(-1), right=True).reshape(log_sigma.shape) - 1
    low = low.clamp(0, table.shape[0] - 2)
    lo, hi = table[low], table[low + 1]
    weight = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
    return (low.to(torch.float64) + weight).to(torch.float32)


def is_discrete(model_sampling) -> bool:
    """Whether the model sampling rounds to ComfyUI's plain discrete timestep (the only case this module changes)."""
    discrete = comfy.model_sampling.ModelSamplingDiscrete
    return isinstance(model_sampling, discrete) and type(model_sampling).timestep is discrete.timestep \
        and isinstance(getattr(model_sampling, "log_sigmas", None), torch.Tensor)


class ContinuousTimestepSampling:
    """A view of a discrete model sampling whose `timestep(sigma)` is `continuous_timestep` (all else delegated)."""

    def __init__(self, model_sampling):
        self.inner = model_sampling

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return continuous_timestep(sigma, self.inner.log_sigmas)

    def __getattr__(self, name):
        if name == "inner":  # not yet set (copy/pickle): no delegation loop
            raise AttributeError(name)
        return getattr(self.inner, name)


def _apply_model_wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                         **kwargs):
    """APPLY_MODEL wrapper: continuous timesteps of the call's sigmas `t` for the DIFFUSION_MODEL wrapper."""
    model_sampling = getattr(executor.class_obj, "model_sampling", None)
    if is_discrete(model_sampling):
        transformer_options = dict(transformer_options)
        transformer_options[TIMESTEPS_KEY] = continuous_timestep(t, model_sampling.log_sigmas)
    return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def _diffusion_model_wrapper(executor, x, timesteps=None, context=None, y=None, control=None, transformer_options={},
                             **kwargs):
    """DIFFUSION_MODEL wrapper: the UNet gets the continuous timesteps instead of ComfyUI's rounded ones."""
    exact = transformer_options.get(TIMESTEPS_KEY)
    if exact is not None and timesteps is not None and exact.shape == timesteps.shape:
        timesteps = exact.to(device=timesteps.device, dtype=timesteps.dtype)
    return executor(x, timesteps, context, y, control, transformer_options, **kwargs)


def _controls_of(conds) -> list:
    found, seen = [], set()
    for cond_list in conds:
        for cond in cond_list or []:
            control = cond.get("control") if isinstance(cond, dict) else None
            while control is not None and id(control) not in seen:
                seen.add(id(control))
                found.append(control)
                control = getattr(control, "previous_controlnet", None)
    return found


def _calc_cond_batch_wrapper(executor, model, conds, x_in, timestep, model_options):
    """CALC_COND_BATCH wrapper: ControlNets compute continuous timesteps while this batch runs."""
    swapped = []
    for control in _controls_of(conds):
        sampling = getattr(control, "model_sampling_current", None)
        if is_discrete(sampling):
            control.model_sampling_current = ContinuousTimestepSampling(sampling)
            swapped.append((control, sampling))
    try:
        return executor(model, conds, x_in, timestep, model_options)
    finally:
        for control, sampling in swapped:
            control.model_sampling_current = sampling


def use_continuous_timesteps(model_patcher) -> None:
    """Register the three wrappers on `model_patcher` (a MuseV MODEL clone), replacing earlier ones."""
    wrappers = comfy.patcher_extension.WrappersMP
    for kind, wrapper in ((wrappers.APPLY_MODEL, _apply_model_wrapper),
                          (wrappers.DIFFUSION_MODEL, _diffusion_model_wrapper),
                          (wrappers.CALC_COND_BATCH, _calc_cond_batch_wrapper)):
        model_patcher.remove_wrappers_with_key(kind, KEY)
        model_patcher.add_wrapper_with_key(kind, KEY, wrapper)
