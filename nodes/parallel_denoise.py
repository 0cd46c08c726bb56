"""Visual-conditioned parallel denoising as a ComfyUI context handler, and the sampling entry point.

The latent batch of a MuseV run is `[condition frame(s) ; generated frames]` on the batch axis (`(n_vis + L) c h w`,
latent cells). At every model evaluation the handler (`model_options["context_handler"]`, called by ComfyUI's
`calc_cond_batch`) runs one UNet call per `uniform_v2` window of the generated frames, each with the CLEAN condition
latent(s) in front, drops the condition outputs and fuses the window predictions per frame (MuseV
pipeline_controlnet.py, spec/musev.md §4.4). Sampling itself stays ComfyUI's: any sampler and scheduler, CFG,
previews, the progress bar and Cancel.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

import comfy.context_windows
import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..musev_core.noise import blend_condition_into_noise, initial_noise
from ..musev_core.windows import fuse_weights, uniform_v2_windows, validate_window_settings
from .musev_model import WINDOW_KEY, MuseVWindow, check_reference_inputs


#: Attributes where ComfyUI's ControlNet objects keep prepared hints between calls: `cond_hint` / `control_input`
#: (one tensor, rebuilt when the latent size changes) and, in newer ComfyUI, the `cond_hints` / `control_inputs`
#: dicts keyed by latent size only. Windows share the latent size, so every window gets empty caches of its own.
HINT_CACHES = ("cond_hint", "cond_hints", "control_input", "control_inputs")


def _empty_hint_caches(control) -> dict:
    """Give `control` empty hint caches (found by name and kind); returns the old ones for `_restore_hint_caches`."""
    saved = {}
    for name in HINT_CACHES:
        if hasattr(control, name):
            value = getattr(control, name)
            saved[name] = value
            # a new dict, never the old one cleared: the old one is put back after the run
            setattr(control, name, {} if isinstance(value, dict) else None)
    return saved


def _restore_hint_caches(control, saved: dict) -> None:
    for name, value in saved.items():
        setattr(control, name, value)


class MuseVContextHandler(comfy.context_windows.ContextHandlerABC):
    """Context handler for one MuseV run (small and tensor-free, since model_options are deep-copied on clone).

    Contract with the sampler: the first `num_condition` entries of the latent batch hold the clean condition
    latents and are kept clean by a zero noise and a denoise mask, so the handler reads them from `x_in`.

    Args:
        num_condition: n_vis, condition frames at the front of the batch (0 = every frame from noise).
        context_frames: window length F (frames).
        context_overlap: overlap O (frames) between neighbouring windows.
        fuse_method: `flat` (MuseV's plain average), `pyramid` or `overlap-linear`.
        motion_speed: frame-position multiplier for the referencenet flavour.
        reference: ReferenceNet features given to every window (referencenet flavour), or None.
        ip_tokens: IP-Adapter tokens given to every window (referencenet flavour), or None.
    The two reference values are shared, never copied (their `__deepcopy__` returns themselves).
    """

    def __init__(self, num_condition: int, context_frames: int, context_overlap: int, fuse_method: str = "flat",
                 motion_speed: float = 8.0, reference=None, ip_tokens=None):
        self.num_condition = num_condition
        self.reference = reference
        self.ip_tokens = ip_tokens
        self.context_frames = context_frames
        self.context_overlap = context_overlap
        self.fuse_method = fuse_method
        self.motion_speed = motion_speed
        # read by core's PREPARE_SAMPLING memory-estimate wrapper (frames per UNet call, frame axis)
        self.context_length = num_condition + context_frames
        self.dim = 0
        self.freenoise = False  # newer core code may look for it on any handler

    def _reference_on(self, device, dtype):
        """The reference features on the sampling device, moved once per run (kept only by this handler)."""
        if self.reference is None:
            return None
        key = (str(device), dtype)
        cached = getattr(self, "_moved", None)
        if cached is None or cached[0] != key:
            self._moved = (key, self.reference.to(device, dtype))
        return self._moved[1]

    def __deepcopy__(self, memo):
        """Copies share the (immutable) reference values and drop the per-run device cache."""
        copy = MuseVContextHandler(self.num_condition, self.context_frames, self.context_overlap, self.fuse_method,
                                   self.motion_speed, self.reference, self.ip_tokens)
        memo[id(self)] = copy
        return copy

    def set_window(self, transformer_options: dict, condition_index: list[int], frames: list[int], total: int,
                   reference) -> None:
        """Describe one window call to the UNet in `transformer_options` (a model family's handler overrides it).

        Args:
            condition_index: positions of the clean condition frame(s) inside the call.
            frames: the call's indices into the full latent batch; total: frames in the batch.
            reference: this handler's reference value on the sampling device (`_reference_on`), or None.
        """
        transformer_options[WINDOW_KEY] = MuseVWindow(condition_index, frames, total, self.motion_speed,
                                                      reference=reference, ip_tokens=self.ip_tokens)

    def clear_window(self, transformer_options: dict) -> None:
        """Remove what `set_window` put into `transformer_options`."""
        transformer_options.pop(WINDOW_KEY, None)

    def should_use_context(self, model, conds, x_in, timestep, model_options) -> bool:
        return x_in.shape[0] > self.num_condition

    def windows(self, num_generated: int) -> list[list[int]]:
        """`uniform_v2` windows over the generated frames (indices 0..L-1)."""
        return uniform_v2_windows(num_generated, self.context_frames, self.context_overlap)

    def get_resized_cond(self, cond_in, x_in, window, device=None):
        """Slice per-frame entries of a cond list to the call's frames (`window` = indices into the batch)."""
        if cond_in is None:
            return None
        full = x_in.shape[0]
        resized = []
        for cond in cond_in:
            new = cond.copy()
            for key, value in cond.items():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == full and full > 1:
                    new[key] = value[window]
                elif key == "model_conds" and isinstance(value, dict):
                    model_conds = value.copy()
                    for name, item in value.items():
                        tensor = getattr(item, "cond", None)
                        if isinstance(tensor, torch.Tensor) and tensor.ndim > 0 and tensor.shape[0] == full \
                                and full > 1 and hasattr(item, "_copy_with"):
                            model_conds[name] = item._copy_with(tensor[window])
                    new[key] = model_conds
            resized.append(new)
        return resized

    @staticmethod
    def _controls(conds) -> list:
        """Every distinct ControlNet (ControlBase) attached to the conds, following `previous_controlnet` chains."""
        found, seen = [], set()
        for cond_list in conds:
            for cond in cond_list or []:
                control = cond.get("control")
                while control is not None:
                    if id(control) not in seen:
                        seen.add(id(control))
                        found.append(control)
                    control = getattr(control, "previous_controlnet", None)
        return found

    def per_frame_controls(self, conds, total: int) -> list:
        """ControlNets with one hint per frame, i.e. `cond_hint_original` of `total` images.

        One hint image is shared by all frames (left alone). Any other count is refused: ComfyUI would give every
        window the first hints of the video.

        Raises:
            ValueError: hint count neither 1 nor n_vis + L, with what to connect instead.
        """
        per_frame = []
        for control in self._controls(conds):
            hint = getattr(control, "cond_hint_original", None)
            if not isinstance(hint, torch.Tensor) or hint.ndim < 4 or hint.shape[0] == 1:
                continue
            if hint.shape[0] != total:
                n_cond = self.num_condition
                raise ValueError(
                    f"a ControlNet has {hint.shape[0]} hint images, but the video has {total} frames "
                    f"({n_cond} condition + {total - n_cond} generated): give one hint per frame, the condition "
                    f"frame's hint first (e.g. Batch Images of the character's pose and the video's poses), or a "
                    f"single hint for all frames")
            per_frame.append(control)
        return per_frame

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        n_cond = self.num_condition
        total = x_in.shape[0]
        # each window's ControlNet sees the hints of its own frames, condition frame(s) first (MuseV §5)
        controls = self.per_frame_controls(conds, total)
        full_hints = [control.cond_hint_original for control in controls]
        windows = self.windows(total - n_cond)
        condition_index = list(range(n_cond))
        clean = x_in[:n_cond]
        if n_cond:
            # the UNet must see the condition latent clean and unscaled: undo the sampler's input scaling
            sigma = timestep[:n_cond]
            c_in = model.model_sampling.calculate_input(sigma, torch.ones_like(clean))
            condition_input = clean / c_in
        reference = self._reference_on(x_in.device, x_in.dtype)
        fused = [torch.zeros_like(x_in) for _ in conds]
        weight_sum = torch.zeros((total, 1, 1, 1), device=x_in.device, dtype=x_in.dtype)
        transformer_options = model_options.setdefault("transformer_options", {})
        saved_caches = [_empty_hint_caches(control) for control in controls]
        try:
            for window in windows:
                comfy.model_management.throw_exception_if_processing_interrupted()
                frames = condition_index + [n_cond + f for f in window]
                self.set_window(transformer_options, condition_index, frames, total, reference)
                # IPAdapter_plus and other packs slice per-frame inputs with AnimateDiff's ad_params
                transformer_options["ad_params"] = {"full_length": total, "context_length": len(frames),
                                                    "sub_idxs": frames}
                sub_x = x_in[frames].clone()
                if n_cond:
                    sub_x[:n_cond] = condition_input
                for control, hints in zip(controls, full_hints):
                    control.cond_hint_original = hints[frames]
                    _empty_hint_caches(control)  # prepared again from this window's frames
                sub_conds = [self.get_resized_cond(c, x_in, frames) for c in conds]
                outputs = calc_cond_batch(model, sub_conds, sub_x, timestep[frames], model_options)
                weights = fuse_weights(window, windows, self.fuse_method).to(x_in.device, x_in.dtype)
                target = [n_cond + f for f in window]
                for i, out in enumerate(outputs):
                    fused[i][target] += out[n_cond:] * weights[:, None, None, None]
                weight_sum[target] += weights[:, None, None, None]
        finally:
            self.clear_window(transformer_options)
            transformer_options.pop("ad_params", None)
            for control, hints, saved in zip(controls, full_hints, saved_caches):
                control.cond_hint_original = hints
                _restore_hint_caches(control, saved)
        for i in range(len(fused)):
            fused[i][n_cond:] /= weight_sum[n_cond:]
            fused[i][:n_cond] = clean  # denoised == input: the condition frames stay where they are
        return fused


def check_settings(frames: int, context_frames: int, context_overlap: int) -> str | None:
    """Queue-time check shared by the sampler node's VALIDATE_INPUTS."""
    return validate_window_settings(frames, context_frames, context_overlap)


def musev_sample(model, positive, negative, condition_samples, frames: int, width: int, height: int, seed: int,
                 steps: int, cfg: float, sampler_name: str, scheduler: str, context_frames: int, context_overlap: int,
                 fuse_method: str, motion_speed: float, w_ind_noise: float, img_weight: float, denoise: float,
                 noise_type: str = "video_fusion", callback=None, reference=None, ip_tokens=None,
                 init_latents=None):
    """Run one MuseV video through ComfyUI's sampler with parallel windows.

    Args:
        model: MODEL with MuseV applied (`LoadMuseVUNet`).
        positive, negative: CONDITIONING.
        condition_samples: `(n_vis, 4, h, w)` VAE latents (as from VAEEncode, unscaled) or None.
        frames: L, generated frames.
        width, height: video size in pixels when no condition latent is given (0 = the condition's size).
        callback: optional `fn(step, x0, x, total_steps)` with the full latent batch (model space) at every step.
        reference: `ReferenceFeatures` (MuseV ReferenceNet Encode) or None; needs a musev_referencenet MODEL.
        ip_tokens: `IPTokens` (MuseV IP-Adapter Embed) or None; needs a musev_referencenet MODEL.
        init_latents: video2video, `(>= L, 4, h, w)` VAE latents (unscaled) of an RGB video: its first L frames are
            the start of the generated frames, noised to the first sigma of the (denoise-shortened) schedule.
            MuseV `which2video=video` (always the full schedule; its strength is ignored, spec/musev.md §4.3).
        Other arguments as the node's inputs.
    Returns:
        `(n_vis + L, 4, h, w)` latents: the condition frame(s) first (exactly the input), then the generated frames.
    Raises:
        ValueError: impossible settings or a condition latent whose size differs from width/height.
    """
    problem = check_settings(frames, context_frames, context_overlap)
    if problem:
        raise ValueError(problem)
    check_reference_inputs(model, reference, ip_tokens)
    latent_format = model.get_model_object("latent_format")
    channels = latent_format.latent_channels
    if condition_samples is not None:
        if condition_samples.ndim != 4 or condition_samples.shape[1] != channels:
            raise ValueError(f"condition latent must be (frames, {channels}, h, w), got {tuple(condition_samples.shape)}")
        n_cond, _, h, w = condition_samples.shape
        if (width and width // 8 != w) or (height and height // 8 != h):
            raise ValueError(
                f"the condition latent is {w * 8}x{h * 8} px ({w}x{h} latent cells) but width x height ask for "
                f"{width}x{height} px; set width and height to 0 to use the condition's size, or resize the image")
    else:
        if not width or not height:
            raise ValueError("width and height are needed when no condition latent is connected")
        n_cond, h, w = 0, height // 8, width // 8
    total = n_cond + frames
    if init_latents is not None:
        if init_latents.ndim != 4 or init_latents.shape[1] != channels or tuple(init_latents.shape[2:]) != (h, w):
            raise ValueError(f"the video latent is {tuple(init_latents.shape)}, expected (frames, {channels}, {h}, {w}) "
                             f"to match the condition / video size")
        if init_latents.shape[0] < frames:
            raise ValueError(f"the video has {init_latents.shape[0]} frames but {frames} are to be generated: lower "
                             f"'frames' or give a longer video")

    # MuseV's starting noise for the generated frames, drawn in its b c t h w layout for seed parity
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = initial_noise((1, channels, frames, h, w), generator, noise_type, w_ind_noise)
    if n_cond and init_latents is None:  # MuseV blends the image only when no init video is given
        condition_model = latent_format.process_in(condition_samples.float().cpu())
        noise = blend_condition_into_noise(noise, condition_model.permute(1, 0, 2, 3)[None], img_weight)
    noise = noise[0].permute(1, 0, 2, 3)
    noise = torch.cat([torch.zeros((n_cond, channels, h, w)), noise], dim=0)

    latent_image = torch.zeros((total, channels, h, w))
    if n_cond:
        latent_image[:n_cond] = condition_samples.float().cpu()
        if denoise < 1.0 and init_latents is None:  # start from the condition image, noised to the first sigma
            latent_image[n_cond:] = condition_samples.float().cpu().mean(dim=0, keepdim=True)
    if init_latents is not None:  # video2video: start from the video, noised to the first sigma
        latent_image[n_cond:] = init_latents[:frames].float().cpu()
    mask = torch.ones((total, 1, h, w))
    mask[:n_cond] = 0.0

    run_model = model.clone()
    run_model.model_options["context_handler"] = MuseVContextHandler(n_cond, context_frames, context_overlap,
                                                                     fuse_method, motion_speed, reference, ip_tokens)
    comfy.context_windows.create_prepare_sampling_wrapper(run_model)

    ksampler = comfy.samplers.KSampler(run_model, steps=steps, device=run_model.load_device, sampler=sampler_name,
                                       scheduler=scheduler, denoise=denoise, model_options=run_model.model_options)
    sigmas = ksampler.sigmas
    noise = noise * _noise_scale_correction(run_model, sigmas)

    preview = latent_preview.prepare_callback(run_model, len(sigmas) - 1)

    def video_callback(step, x0, x, total_steps):
        if callback is not None:
            callback(step, x0, x, total_steps)
        # the preview shows the first generated frame, not the static condition frame
        preview(step, x0[n_cond:n_cond + 1], x[n_cond:n_cond + 1], total_steps)

    samples = comfy.sample.sample(run_model, noise, steps, cfg, sampler_name, scheduler, positive, negative,
                                  latent_image, denoise=denoise, noise_mask=mask if n_cond else None,
                                  callback=video_callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
                                  seed=seed)
    samples = samples.float().cpu()
    if n_cond:
        samples[:n_cond] = condition_samples.float().cpu()
    return samples


def _noise_scale_correction(model, sigmas) -> float:
    """Factor making ComfyUI's start `noise * sqrt(1 + sigma_0^2)` equal MuseV's `noise * sigma_0`.

    ComfyUI scales full-denoise noise by sqrt(1 + sigma_0^2); MuseV (diffusers Euler, linspace spacing) by
    `init_noise_sigma = sigma_0`. Uses ComfyUI's own rule to know which scaling it will apply.
    """
    if len(sigmas) < 2 or float(sigmas[0]) <= 0:
        return 1.0

    wrapped = SimpleNamespace(inner_model=SimpleNamespace(model_sampling=model.get_model_object("model_sampling")))
    if comfy.samplers.Sampler().max_denoise(wrapped, sigmas):
        s0 = float(sigmas[0])
        return s0 / (1.0 + s0 ** 2) ** 0.5
    return 1.0
