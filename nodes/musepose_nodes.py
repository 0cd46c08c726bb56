"""Nodes: Load MusePose, MusePose Image Conditioning, MusePose Reference Encode, MusePose Sampler, and MusePose's
DDIM as a SAMPLER and its trailing timesteps as SIGMAS (for SamplerCustom)."""
from __future__ import annotations

import torch

import comfy.latent_formats
import comfy.samplers
import comfy.utils

from . import model_folders
from .errors import names_node
from .input_checks import declared_range_problem, finite
from .musepose_model import is_musepose_model, load_denoising_model, pose_features
from .musepose_reference import encode_reference, load_reference_unet
from .musepose_sampling import (MUSEPOSE_SAMPLER, MUSEPOSE_SCHEDULER, check_settings, musepose_ddim_sampler,
                                musepose_sample, musepose_trailing_sigmas, sampler_and_sigmas)
from ..musev_core.musepose.schedule import (DEFAULT_CFG, DEFAULT_CONTEXT_FRAMES, DEFAULT_CONTEXT_OVERLAP,
                                            DEFAULT_STEPS)

FOLDER = "musepose"
MAX_FRAMES = 4096


def _files(default: str) -> tuple[list[str], dict]:
    files = model_folders.list_files(FOLDER)
    matches = [f for f in files if f.replace("\\", "/").split("/")[-1].startswith(default)]
    options = {"default": matches[0]} if matches else {}
    return files, options


def resize_to_multiple_of_8(images: torch.Tensor, width: int = 0, height: int = 0) -> torch.Tensor:
    """Lanczos-resize `n H W c` images to `width x height` (0 = their own size), both rounded down to multiples of 8,
    as MusePose's VaeImageProcessor does (PIL Lanczos on uint8 images; a no-op when the size already fits)."""
    h, w = images.shape[1:3]
    target_w, target_h = (width or w) // 8 * 8, (height or h) // 8 * 8
    if target_w < 8 or target_h < 8:
        raise ValueError(f"images of {w}x{h} px are too small for MusePose (at least 8x8 px)")
    if (target_w, target_h) == (w, h):
        return images
    return comfy.utils.common_upscale(images.movedim(-1, 1), target_w, target_h, "lanczos", "disabled").movedim(1, -1)


class LoadMusePose:
    """MusePose's denoising UNet, motion modules and pose guider as one MODEL."""

    DESCRIPTION = (
        "Loads MusePose (TMElyralab/MusePose) from models/musepose: the denoising UNet becomes a ComfyUI SD1.5 MODEL "
        "with MusePose's v-prediction, zero-terminal-SNR schedule; its 21 motion modules and the pose guider are "
        "attached to it. Connect to 'MusePose Sampler'.")
    CATEGORY = "MuseV/MusePose"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("MusePose's denoising UNet with motion modules, pose guider and reference-attention patches.",)

    @classmethod
    def INPUT_TYPES(cls):
        unet_files, unet_default = _files("denoising_unet")
        motion_files, motion_default = _files("motion_module")
        guider_files, guider_default = _files("pose_guider")
        return {"required": {
            "denoising_unet": (unet_files, {**unet_default, "tooltip": "denoising_unet.pth from TMElyralab/MusePose "
                                                                      "(models/musepose)."}),
            "motion_module": (motion_files, {**motion_default, "tooltip": "motion_module.pth from TMElyralab/MusePose "
                                                                         "(not an AnimateDiff mm_sd_v15 file)."}),
            "pose_guider": (guider_files, {**guider_default, "tooltip": "pose_guider.pth from TMElyralab/MusePose."}),
        }}

    @names_node("Load MusePose")
    def load(self, denoising_unet, motion_module, pose_guider):
        paths = [model_folders.resolve(FOLDER, name) for name in (denoising_unet, motion_module, pose_guider)]
        model, _info = load_denoising_model(*paths)
        return (model,)


class MusePoseImageConditioning:
    """CLIP Vision Encode output -> MusePose's positive / negative conditioning (spec §3)."""

    DESCRIPTION = (
        "Turns the character image's CLIP vision output (Load CLIP Vision with the sd-image-variations image encoder, "
        "CLIP ViT-L/14 with projection, then CLIP Vision Encode with crop 'none') into MusePose's conditioning: one "
        "image-embedding token for the positive, zeros for the negative, as MusePose does.")
    CATEGORY = "MuseV/MusePose"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("One token: the projected CLIP image embedding.", "One token of zeros (MusePose's uncond).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_vision_output": ("CLIP_VISION_OUTPUT", {
            "tooltip": "From CLIP Vision Encode on the character image."})}}

    @names_node("MusePose Image Conditioning")
    def encode(self, clip_vision_output):
        embeds = getattr(clip_vision_output, "image_embeds", None)
        if embeds is None:
            try:
                embeds = clip_vision_output["image_embeds"]
            except (KeyError, TypeError):
                embeds = None
        if embeds is None:
            raise ValueError("this CLIP vision output has no projected image embedding: load the sd-image-variations "
                             "image encoder (CLIP ViT-L/14 with projection) with Load CLIP Vision")
        token = embeds[:1].float()[:, None]  # (1, 1, dim)
        return ([[token, {}]], [[torch.zeros_like(token), {}]])


class MusePoseReferenceEncode:
    """The character image through the VAE and MusePose's reference UNet once: the reference attention bank."""

    DESCRIPTION = (
        "Runs the character image through your VAE and MusePose's reference UNet once (t = 0) and keeps the "
        "self-attention features every frame of the video attends to (only the guided branch, as in MusePose). "
        "Use the same size as the pose frames.")
    CATEGORY = "MuseV/MusePose"
    FUNCTION = "encode"
    RETURN_TYPES = ("MUSEPOSE_REFERENCE",)
    RETURN_NAMES = ("reference",)
    OUTPUT_TOOLTIPS = ("Reference attention bank (16 float16 feature maps) for 'MusePose Sampler'.",)

    def __init__(self):
        self.cache = model_folders.LastModelCache()

    @classmethod
    def INPUT_TYPES(cls):
        files, default = _files("reference_unet")
        return {"required": {
            "reference_unet": (files, {**default, "tooltip": "reference_unet.pth from TMElyralab/MusePose."}),
            "vae": ("VAE", {"tooltip": "SD1.5 VAE (MusePose uses sd-vae-ft-mse)."}),
            "image": ("IMAGE", {"tooltip": "The character image (first image of the batch is used)."}),
            "positive": ("CONDITIONING", {"tooltip": "From MusePose Image Conditioning (one image-embedding token)."}),
            "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                              "tooltip": "Video width in pixels (= the pose frames' width); 0 = the image's width. "
                                         "The image is stretched with Lanczos, as MusePose does."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                               "tooltip": "Video height in pixels (= the pose frames' height); 0 = the image's."}),
        }}

    @names_node("MusePose Reference Encode")
    def encode(self, reference_unet, vae, image, positive, width=0, height=0):
        context = positive[0][0]
        if context.ndim != 3 or context.shape[1] != 1:
            raise ValueError(f"positive must be MusePose's one-token image conditioning (MusePose Image "
                             f"Conditioning), got a context of shape {tuple(context.shape)}")
        path = model_folders.resolve(FOLDER, reference_unet)
        patcher = self.cache.get((path,), lambda: load_reference_unet(path)[0])
        pixels = resize_to_multiple_of_8(image[:1, :, :, :3], width, height)
        latent = comfy.latent_formats.SD15().process_in(vae.encode(pixels).float())  # x 0.18215, as MusePose
        return (encode_reference(patcher, latent, context[:1]),)


class MusePoseSampler:
    """Pose-driven video with MusePose over context windows, through ComfyUI's sampler."""

    DESCRIPTION = (
        "Generates one frame per pose image with MusePose. The video is denoised in overlapping windows (MusePose's "
        "schedule, predictions averaged before CFG); each window gets its frames' pose features and the reference "
        "bank. Defaults are MusePose's test_stage_2 settings and its DDIM sampler.")
    CATEGORY = "MuseV/MusePose"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents, one per pose frame on the batch axis. Decode with VAE Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "From Load MusePose."}),
                "positive": ("CONDITIONING", {"tooltip": "From MusePose Image Conditioning."}),
                "negative": ("CONDITIONING", {"tooltip": "From MusePose Image Conditioning (zeros)."}),
                "reference": ("MUSEPOSE_REFERENCE", {"tooltip": "From MusePose Reference Encode."}),
                "pose_images": ("IMAGE", {"tooltip": "Rendered, aligned poses (MuseV Pose Align), one per frame. "
                                                     "Their size (rounded down to a multiple of 8) is the video's."}),
                "seed": ("INT", {"default": 99, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Seed of MusePose's starting noise (CPU generator, as in MusePose)."}),
                "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": 1000,
                                  "tooltip": "Denoising steps (MusePose 20)."}),
                "cfg": ("FLOAT", {"default": DEFAULT_CFG, "min": finite(0.0), "max": 100.0, "step": 0.1,
                                  "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (MusePose 3.5)."}),
                "sampler_name": ([MUSEPOSE_SAMPLER] + list(comfy.samplers.KSampler.SAMPLERS), {
                    "default": MUSEPOSE_SAMPLER,
                    "tooltip": "musepose_ddim = MusePose's DDIM (eta 0, its previous-timestep rule); or any ComfyUI "
                               "sampler."}),
                "scheduler": ([MUSEPOSE_SCHEDULER] + list(comfy.samplers.KSampler.SCHEDULERS), {
                    "default": MUSEPOSE_SCHEDULER,
                    "tooltip": "musepose_trailing = MusePose's trailing timesteps (999, 949, ... for 20 steps); or "
                               "any ComfyUI scheduler."}),
                "context_frames": ("INT", {"default": DEFAULT_CONTEXT_FRAMES, "min": 1, "max": 128,
                                           "tooltip": "Frames per window (MusePose 48); memory grows with it."}),
                "context_overlap": ("INT", {"default": DEFAULT_CONTEXT_OVERLAP, "min": 0, "max": 127,
                                            "tooltip": "Frames shared by neighbouring windows (MusePose 4)."}),
                "pad_to_windows": ("BOOLEAN", {"default": True,
                                               "tooltip": "Repeat the last pose so the windows tile the video (as "
                                                          "MusePose's script does; the extra frames are dropped). "
                                                          "Off: the last window wraps around to the first frames."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, context_frames=None, context_overlap=None):
        # ComfyUI skips its own range check for inputs named here (nodes/input_checks.py)
        problem = declared_range_problem(cls, context_frames=context_frames, context_overlap=context_overlap)
        if problem:
            return problem
        if context_frames is not None and context_overlap is not None:
            problem = check_settings(1, context_frames, context_overlap)
            if problem:
                return problem
        return True

    @names_node("MusePose Sampler")
    def sample(self, model, positive, negative, reference, pose_images, seed, steps, cfg, sampler_name, scheduler,
               context_frames, context_overlap, pad_to_windows=True):
        if not is_musepose_model(model):
            raise ValueError("this MODEL is not a MusePose MODEL: load it with 'Load MusePose'")
        pose = resize_to_multiple_of_8(pose_images[..., :3])
        features = pose_features(model, pose)
        sampler, sigmas = sampler_and_sigmas(model, sampler_name, scheduler, steps)
        samples = musepose_sample(model, positive, negative, features, reference, seed, sampler, sigmas, cfg,
                                  context_frames, context_overlap, pad_to_windows)
        return ({"samples": samples},)


class MusePoseDDIMSampler:
    """MusePose's DDIM as a SAMPLER for SamplerCustom / SamplerCustomAdvanced."""

    DESCRIPTION = ("MusePose's DDIM (eta 0, previous timestep t - 1000 // steps, as diffusers' DDIMScheduler with "
                   "MusePose's settings). Pair it with 'MusePose Scheduler' sigmas.")
    CATEGORY = "MuseV/MusePose"
    FUNCTION = "get_sampler"
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("A SAMPLER.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def get_sampler(self):
        return (musepose_ddim_sampler(),)


class MusePoseScheduler:
    """MusePose's trailing timesteps as SIGMAS."""

    DESCRIPTION = "MusePose's trailing DDIM timesteps (999, 949, ... for 20 steps) as SIGMAS of the MODEL's schedule."
    CATEGORY = "MuseV/MusePose"
    FUNCTION = "get_sigmas"
    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = ("steps + 1 sigmas, the last 0.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "From Load MusePose (its zero-SNR table)."}),
            "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": 1000, "tooltip": "Denoising steps."}),
        }}

    def get_sigmas(self, model, steps):
        return (musepose_trailing_sigmas(model.get_model_object("model_sampling"), steps),)
