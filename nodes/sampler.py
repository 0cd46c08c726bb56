"""Node: MuseV Parallel Denoise Sampler (visual-conditioned parallel denoising over context windows)."""
from __future__ import annotations

import comfy.samplers

from ..musev_core.noise import NOISE_TYPES
from ..musev_core.windows import FUSE_METHODS
from .errors import names_node
from .input_checks import declared_range_problem, finite
from .musev_model import is_musev_model
from .parallel_denoise import musev_sample

MAX_FRAMES = 4096


class MuseVParallelDenoiseSampler:
    """Generates a video with MuseV: every context window sees the clean condition frame(s) in front."""

    DESCRIPTION = (
        "MuseV's visual-conditioned parallel denoising. The video is split into overlapping context windows; every "
        "window sees the clean condition frame (your image, VAE-encoded) in front, so long videos keep the "
        "condition's look without drift, and memory depends on the window, not the video length. Window predictions "
        "are fused per frame at every step; the sampler, scheduler and CFG are ComfyUI's. Output: the condition "
        "frame(s) first, then the generated frames.")
    CATEGORY = "MuseV"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents, frames on the batch axis: condition frame(s) first, then `frames` generated "
                       "frames. Decode with VAE Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "SD1.5 MODEL with MuseV applied (Load MuseV UNet)."}),
                "positive": ("CONDITIONING", {"tooltip": "Prompt for the video."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt."}),
                "frames": ("INT", {"default": 12, "min": 1, "max": MAX_FRAMES,
                                   "tooltip": "Frames to generate after the condition frame(s) (MuseV time_size). "
                                              "MuseV was trained at about 3 fps; the video's fps is set when saving."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Seed of MuseV's starting noise (CPU generator, as in MuseV)."}),
                "steps": ("INT", {"default": 10, "min": 1, "max": 1000,
                                  "tooltip": "Denoising steps (MuseV video default 10)."}),
                "cfg": ("FLOAT", {"default": 3.5, "min": finite(0.0), "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (MuseV video default 3.5)."}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "euler",
                                 "tooltip": "Any ComfyUI sampler. MuseV uses plain Euler."}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "normal",
                              "tooltip": "Any ComfyUI scheduler. 'normal' gives MuseV's linspace timesteps."}),
                "context_frames": ("INT", {"default": 12, "min": 1, "max": 256,
                                           "tooltip": "Generated frames per context window (MuseV 12). Each UNet call "
                                                      "sees the condition frame(s) plus this many frames; memory "
                                                      "grows with it."}),
                "context_overlap": ("INT", {"default": 4, "min": 0, "max": 255,
                                            "tooltip": "Frames shared by neighbouring windows (MuseV 4); must be "
                                                       "smaller than context_frames."}),
                "fuse_method": (list(FUSE_METHODS), {"default": "flat",
                                "tooltip": "How overlapping window predictions are combined per frame: flat = MuseV's "
                                           "plain average; pyramid = favour window centres; overlap-linear = "
                                           "cross-fade across the overlap."}),
                "motion_speed": ("FLOAT", {"default": 8.0, "min": finite(0.0), "max": 100.0, "step": 0.1,
                                           "tooltip": "Frame-position multiplier of the musev_referencenet UNets "
                                                      "(MuseV 8; ~2 for calmer motion). No effect on 'musev'."}),
                "w_ind_noise": ("FLOAT", {"default": 0.5, "min": finite(0.0), "max": 1.0, "step": 0.01,
                                          "tooltip": "Share of independent per-frame noise in MuseV's video-fusion "
                                                     "noise (the rest is one noise shared by all frames)."}),
                "img_weight": ("FLOAT", {"default": 0.001, "min": finite(0.0), "max": 1.0, "step": 0.0001,
                                         "tooltip": "Weight of the condition latent blended into the starting noise "
                                                    "(MuseV 0.001). Ignored without a condition latent."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": finite(0.0), "max": 1.0, "step": 0.01,
                                      "tooltip": "Below 1 shortens the schedule; the generated frames start from the "
                                                 "'video' input (video2video) or else the condition image, noised to "
                                                 "the first sigma."}),
            },
            "optional": {
                "condition": ("LATENT", {"tooltip": "Condition frame(s) from VAE Encode (your image). Every window "
                                                    "sees them clean in front; they are the first output frames. "
                                                    "Without it every frame is generated from noise."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                  "tooltip": "Video width in pixels; 0 = the condition latent's width. Needed "
                                             "without a condition latent."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                   "tooltip": "Video height in pixels; 0 = the condition latent's height. Needed "
                                              "without a condition latent."}),
                "reference": ("MUSEV_REFERENCE", {"tooltip": "ReferenceNet features (MuseV ReferenceNet Encode), "
                                                             "fused into every window; musev_referencenet MODEL only."}),
                "ip_tokens": ("MUSEV_IP_TOKENS", {"tooltip": "IP-Adapter tokens (MuseV IP-Adapter Embed) for the "
                                                             "spatial cross-attentions; musev_referencenet MODEL "
                                                             "only."}),
                "video": ("LATENT", {"tooltip": "video2video: VAE-encoded frames of an RGB video (at least "
                                                "'frames' of them). The generated frames start from them, noised to "
                                                "the first sigma; denoise below 1 shortens the schedule and keeps "
                                                "more of the video (MuseV always used the full schedule)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, context_frames=None, context_overlap=None):
        # Only the inputs of the one rule that needs two values are named: ComfyUI attaches a failure to every
        # named input and skips its own range check for them (so they are re-checked here); every other input
        # keeps ComfyUI's own min/max check, reported once under that input (nodes/input_checks.py).
        problem = declared_range_problem(cls, context_frames=context_frames, context_overlap=context_overlap)
        if problem:
            return problem
        if context_frames is not None and context_overlap is not None and context_overlap >= context_frames:
            return (f"context_overlap ({context_overlap}) must be smaller than context_frames ({context_frames}): "
                    f"windows would never advance")
        return True

    @names_node("MuseV Parallel Denoise Sampler")
    def sample(self, model, positive, negative, frames, seed, steps, cfg, sampler_name, scheduler, context_frames,
               context_overlap, fuse_method, motion_speed, w_ind_noise, img_weight, denoise, condition=None, width=0,
               height=0, reference=None, ip_tokens=None, video=None):
        for name, latent in (("condition", condition), ("video", video)):
            if latent is not None and latent["samples"].shape[0] == 0:
                raise ValueError(f"the {name} latent holds no frames (0 rows): connect a VAE Encode of at least one "
                                 f"image, or disconnect {name}")
        if not is_musev_model(model):
            raise ValueError("this MODEL has no MuseV temporal layers: pass it through 'Load MuseV UNet' first")
        for name, value in (("width", width), ("height", height)):
            if value % 8:
                raise ValueError(f"{name} must be 0 (= the condition's size) or a multiple of 8 pixels, got {value}")
        condition_samples = None if condition is None else condition["samples"]
        samples = musev_sample(model, positive, negative, condition_samples, frames, width, height, seed, steps, cfg,
                               sampler_name, scheduler, context_frames, context_overlap, fuse_method, motion_speed,
                               w_ind_noise, img_weight, denoise, reference=reference, ip_tokens=ip_tokens,
                               init_latents=None if video is None else video["samples"])
        return ({"samples": samples},)


__all__ = ["MuseVParallelDenoiseSampler", "NOISE_TYPES"]
