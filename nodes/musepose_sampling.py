"""MusePose sampling through ComfyUI's sampler: its context windows, its DDIM, pose padding (spec §6-§8).

The windows run through the MuseV context handler (`parallel_denoise.MuseVContextHandler`), specialised only in
its schedule (MusePose's `uniform` at step 0, last window wrapping around) and in what each window call is told
(`MusePoseWindow`: the window's frames, the pose features and the reference bank). Window predictions are averaged
per frame before ComfyUI's CFG, as MusePose does. Sampling stays ComfyUI's: any SAMPLER / SIGMAS, previews, the
progress bar and Cancel. MusePose's DDIM (eta 0, trailing timesteps, `prev = t - 1000 // n`) is a SAMPLER
(`musepose_ddim_sampler`) and its trailing timesteps a SIGMAS (`musepose_trailing_sigmas`).
"""
from __future__ import annotations

import torch
from tqdm.auto import trange

import comfy.context_windows
import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..musev_core.musepose.schedule import (musepose_windows, pose_padding, trailing_timesteps,
                                            validate_window_settings)
from .musepose_model import WINDOW_KEY, MusePoseConditioning, MusePoseWindow
from .parallel_denoise import MuseVContextHandler

#: Names of MusePose's own sampler and scheduler in the sampler node's lists.
MUSEPOSE_SAMPLER = "musepose_ddim"
MUSEPOSE_SCHEDULER = "musepose_trailing"


class MusePoseContextHandler(MuseVContextHandler):
    """MusePose's context windows over the whole latent batch (no condition frames), plain averaging.

    Args:
        context_frames: S; context_overlap: O; context_stride: 1 in test_stage_2.
        conditioning: `MusePoseConditioning` shared (never copied) by every window.
    """

    def __init__(self, context_frames: int, context_overlap: int, conditioning: MusePoseConditioning | None,
                 context_stride: int = 1):
        super().__init__(0, context_frames, context_overlap, "flat", reference=conditioning)
        self.context_stride = context_stride

    def __deepcopy__(self, memo):
        copy = MusePoseContextHandler(self.context_frames, self.context_overlap, self.reference, self.context_stride)
        memo[id(self)] = copy
        return copy

    def windows(self, num_generated: int) -> list[list[int]]:
        """MusePose's windows (the same at every step; the last may wrap around)."""
        return musepose_windows(num_generated, self.context_frames, self.context_overlap, self.context_stride)

    def set_window(self, transformer_options, condition_index, frames, total, reference) -> None:
        transformer_options[WINDOW_KEY] = MusePoseWindow(list(frames), total, reference)

    def clear_window(self, transformer_options) -> None:
        transformer_options.pop(WINDOW_KEY, None)


@torch.no_grad()
def sample_musepose_ddim(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """MusePose's DDIM step (diffusers DDIMScheduler, eta 0) as a k-diffusion sampler function (spec §6).

    In ComfyUI's space `x = x_vp * sqrt(1 + sigma^2)`. Each step takes the model's x0, `eps = (x - x0) / sigma`,
    and lands on `x_vp' = sqrt(a_p) x0 + sqrt(1 - a_p) eps` with `a_p = alphas_cumprod[t - T // n]` (1 when that is
    negative), where t is the timestep of sigma, T the train timesteps and n the steps of this schedule: MusePose's
    previous-timestep rule, which differs from the next timestep when T / n is not whole. `x_vp'` is handed to the
    next sigma unchanged, as MusePose evaluates the next step at the next trailing timestep.
    """
    extra_args = {} if extra_args is None else extra_args
    model_sampling = model.inner_model.model_patcher.get_model_object("model_sampling")
    table = getattr(model_sampling, "musepose_alphas", None)
    if table is None:
        table = 1.0 / (1.0 + model_sampling.sigmas.double() ** 2)
    table = table.double()
    total_timesteps = int(table.shape[0])
    steps = len(sigmas) - 1
    s_in = x.new_ones([x.shape[0]])
    for i in trange(steps, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if float(sigma) <= 0:
            x = denoised
            continue
        eps = (x - denoised) / sigma
        t = int(round(float(model_sampling.timestep(sigma.reshape(1)).reshape(-1)[0])))
        previous = t - total_timesteps // steps
        a_p = float(table[previous]) if previous >= 0 else 1.0
        x_vp = a_p ** 0.5 * denoised + (1.0 - a_p) ** 0.5 * eps
        x = x_vp * (1.0 + float(sigma_next) ** 2) ** 0.5
    return x


def musepose_ddim_sampler():
    """MusePose's DDIM as a ComfyUI SAMPLER (usable with SamplerCustom and friends)."""
    return comfy.samplers.KSAMPLER(sample_musepose_ddim)


def musepose_trailing_sigmas(model_sampling, steps: int) -> torch.Tensor:
    """Sigmas of MusePose's trailing timesteps (`round(arange(1000, 0, -1000/n)) - 1`), then 0.

    Returns:
        `(steps + 1,)` float32 sigmas of the MODEL's table.
    """
    timesteps = trailing_timesteps(steps, int(model_sampling.sigmas.shape[0]))
    sigmas = model_sampling.sigmas[torch.tensor(timesteps)].float()
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sampler_and_sigmas(model, sampler_name: str, scheduler: str, steps: int):
    """The SAMPLER and SIGMAS for a node's names (MusePose's own or any ComfyUI one)."""
    model_sampling = model.get_model_object("model_sampling")
    if sampler_name == MUSEPOSE_SAMPLER:
        sampler = musepose_ddim_sampler()
    else:
        sampler = comfy.samplers.sampler_object(sampler_name)
    if scheduler == MUSEPOSE_SCHEDULER:
        sigmas = musepose_trailing_sigmas(model_sampling, steps)
    else:
        sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, steps).cpu()
    return sampler, sigmas


def check_settings(frames: int, context_frames: int, context_overlap: int) -> str | None:
    """Queue-time check shared by the sampler node's VALIDATE_INPUTS."""
    return validate_window_settings(frames, context_frames, context_overlap)


def musepose_sample(model, positive, negative, pose: torch.Tensor, reference, seed: int, sampler, sigmas,
                    cfg: float, context_frames: int, context_overlap: int, pad_to_windows: bool = True,
                    callback=None):
    """Generate a MusePose video through ComfyUI's sampler.

    Args:
        model: MODEL from 'Load MusePose'.
        positive, negative: CONDITIONING (one CLIP image-embedding token; zeros for the negative).
        pose: `(L, C, h, w)` pose-guider features of every frame (`musepose_model.pose_features`).
        reference: `MusePoseReference` (bank) or None.
        seed: MusePose's noise seed: `randn((1, 4, L, h, w))` from a CPU generator seeded with it (spec §7.1).
        sampler, sigmas: ComfyUI SAMPLER and SIGMAS.
        pad_to_windows: append copies of the last pose so windows tile the video without wrap-around
            (test_stage_2.py, spec §8); the extra frames are cut off again.
        callback: optional `fn(step, x0, x, total_steps)` with the full latent batch at every step.
    Returns:
        `(L, 4, h, w)` latents (model space divided back to VAE space by ComfyUI, like any LATENT).
    Raises:
        ValueError: impossible window settings, or a bank of another size than the pose features.
    """
    frames, _, h, w = pose.shape
    problem = check_settings(frames, context_frames, context_overlap)
    if problem:
        raise ValueError(problem)
    if reference is not None and tuple(reference.latent_hw) != (h, w):
        rh, rw = reference.latent_hw
        raise ValueError(f"the reference was encoded at {rw * 8}x{rh * 8} px but the pose frames are {w * 8}x{h * 8} "
                         f"px: set the reference node's width and height to the pose video's size")
    total = frames
    if pad_to_windows:  # as test_stage_2.py, also below one window (its noise is then drawn for the padded length)
        extra = pose_padding(frames, context_frames, context_overlap)
        pose = torch.cat([pose, pose[-1:].expand(extra, -1, -1, -1)]) if extra else pose
        total = frames + extra
    latent_format = model.get_model_object("latent_format")
    channels = latent_format.latent_channels
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn((1, channels, total, h, w), generator=generator, dtype=torch.float32)
    noise = noise[0].permute(1, 0, 2, 3).contiguous()
    latent_image = torch.zeros((total, channels, h, w))

    run_model = model.clone()
    run_model.model_options["context_handler"] = MusePoseContextHandler(
        context_frames, context_overlap, MusePoseConditioning(pose, reference))
    comfy.context_windows.create_prepare_sampling_wrapper(run_model)
    preview = latent_preview.prepare_callback(run_model, len(sigmas) - 1)

    def video_callback(step, x0, x, total_steps):
        if callback is not None:
            callback(step, x0, x, total_steps)
        preview(step, x0[:1], x[:1], total_steps)

    samples = comfy.sample.sample_custom(run_model, noise, cfg, sampler, sigmas, positive, negative, latent_image,
                                         callback=video_callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
                                         seed=seed)
    return samples.float().cpu()[:frames]
