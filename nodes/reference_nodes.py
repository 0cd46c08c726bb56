"""Nodes: MuseV ReferenceNet Encode and MuseV IP-Adapter Embed (the musev_referencenet conditioning paths)."""
from __future__ import annotations

import os

import torch

import comfy.latent_formats
import comfy.model_management
import comfy.utils

from ..musev_core.checkpoint import CheckpointFile
from ..musev_core.reference import IPTokens, load_image_projection
from ..musev_core.reference import ip_tokens as project_ip_tokens
from . import model_folders
from .errors import names_node
from .input_checks import finite
from .referencenet import build_referencenet_patcher, contexts_for, encode_reference

REFERENCE_TYPE = "MUSEV_REFERENCE"
IP_TOKENS_TYPE = "MUSEV_IP_TOKENS"


def _in_folder(parts: list[str], folder: str) -> bool:
    return folder in parts[:-1]


def referencenet_files() -> list[str]:
    """Files of the `musev` folder inside a `referencenet/` directory (MuseV's layout)."""
    return [n for n in model_folders.list_files("musev") if _in_folder(n.replace("\\", "/").split("/"), "referencenet")]


def image_proj_files() -> list[str]:
    """Files of the `musev` folder whose name mentions `image_proj` (MuseV's `ip_adapter_image_proj.bin`)."""
    return [n for n in model_folders.list_files("musev") if "image_proj" in os.path.basename(n)]


_REFERENCENET_CACHE = model_folders.LastModelCache()
_IMAGE_PROJ_CACHE = model_folders.LastModelCache()


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Centre-crop and resize a `b h w c` IMAGE to width x height (0 keeps that side), as MuseV prepares images."""
    if not width and not height:
        return image
    width = width or image.shape[2]
    height = height or image.shape[1]
    if (image.shape[2], image.shape[1]) == (width, height):
        return image
    resized = comfy.utils.common_upscale(image.movedim(-1, 1), width, height, "lanczos", "center")
    return resized.movedim(1, -1)


#: smallest reference side: one latent cell (the VAE encodes 8x8 px blocks; smaller leaves nothing to encode)
MIN_REFERENCE_SIDE = 8
#: largest side taken from the image as it is (width/height 0); bigger images must be resized with width/height
MAX_UNRESIZED_SIDE = 2048


def check_reference_image(image: torch.Tensor, width: int, height: int) -> None:
    """Refuse a reference IMAGE (`b h w c`) the ReferenceNet cannot use, before any model is loaded.

    Raises:
        ValueError: no frames; a side below 8 px after width/height are applied; or, with width/height 0, a side
            over 2048 px (encoding it as it is would exhaust memory: set width and height to the video's size).
    """
    if image.shape[0] == 0:
        raise ValueError("the image input holds no frames: connect the reference image (e.g. Load Image)")
    out_w, out_h = width or image.shape[2], height or image.shape[1]
    if min(out_w, out_h) < MIN_REFERENCE_SIDE:
        raise ValueError(f"the reference image is {out_w}x{out_h} px, the ReferenceNet needs at least "
                         f"{MIN_REFERENCE_SIDE}x{MIN_REFERENCE_SIDE} px: use a larger image or set width and height "
                         f"(the video's size, e.g. 512x768) to resize it")
    too_big = [f"{name} {size} px" for name, size, given in (("width", out_w, width), ("height", out_h, height))
               if not given and size > MAX_UNRESIZED_SIDE]
    if too_big:
        raise ValueError(f"the reference image is {image.shape[2]}x{image.shape[1]} px ({', '.join(too_big)} taken "
                         f"from the image, over {MAX_UNRESIZED_SIDE} px): set width and height to the video's size "
                         f"(e.g. 512x768) so it is resized first")
def _load_referencenet(path: str, name: str):
    with CheckpointFile(path, name) as checkpoint:  # reads only the encoder tensors
        return build_referencenet_patcher(checkpoint, name)


class MuseVReferenceNetEncode:
    """Runs MuseV's ReferenceNet once on the reference image and outputs its 13 feature maps for the sampler."""

    DESCRIPTION = (
        "MuseV's ReferenceNet (musev_referencenet/referencenet in models/musev): encodes the reference image with your "
        "VAE and runs the ReferenceNet once at timestep 0, with the IP-Adapter tokens as its context (or the prompts "
        "when no IP tokens are connected, as MuseV does). Its 13 feature maps are fused into every window and both CFG "
        "branches of a musev_referencenet MODEL; they are computed once, not per step or window. MuseV uses the "
        "condition image as the reference image.")
    CATEGORY = "MuseV"
    FUNCTION = "encode"
    RETURN_TYPES = (REFERENCE_TYPE,)
    RETURN_NAMES = ("reference",)
    OUTPUT_TOOLTIPS = ("ReferenceNet features of the reference image (per CFG branch). Connect to the 'reference' "
                       "input of MuseV Parallel Denoise Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "referencenet_name": (referencenet_files(), {
                    "tooltip": "MuseV ReferenceNet in models/musev, e.g. musev_referencenet/referencenet/"
                               "diffusion_pytorch_model.safetensors (Hugging Face TMElyralab/MuseV, motion/)."}),
                "vae": ("VAE", {"tooltip": "The SD1.5 VAE used for the video."}),
                "image": ("IMAGE", {"tooltip": "Reference image (MuseV: the condition image). Several images = "
                                               "several references, all fused."}),
            },
            "optional": {
                "ip_tokens": (IP_TOKENS_TYPE, {"tooltip": "IP tokens from MuseV IP-Adapter Embed: the ReferenceNet's "
                                                          "context, as in MuseV's referencenet scripts."}),
                "positive": ("CONDITIONING", {"tooltip": "Used as the ReferenceNet context only when no IP tokens "
                                                         "are connected."}),
                "negative": ("CONDITIONING", {"tooltip": "Context of the unconditional branch when no IP tokens are "
                                                         "connected."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                  "tooltip": "Centre-crop and resize the reference to this width first (MuseV uses "
                                             "the video size); 0 keeps the image's width."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                   "tooltip": "Centre-crop and resize height; 0 keeps the image's height."}),
            },
        }

    @names_node("MuseV ReferenceNet Encode")
    def encode(self, referencenet_name, vae, image, ip_tokens=None, positive=None, negative=None, width=0, height=0):
        check_reference_image(image, width, height)
        cond_context, uncond_context = contexts_for(ip_tokens, positive, negative)
        path = model_folders.resolve("musev", referencenet_name)
        patcher = _REFERENCENET_CACHE.get((path,), lambda: _load_referencenet(path, referencenet_name))
        image = fit_image(image[..., :3], width, height)
        latent = comfy.latent_formats.SD15().process_in(vae.encode(image).float())
        return (encode_reference(patcher, latent, cond_context, uncond_context),)


class MuseVIPAdapterEmbed:
    """CLIP vision image embedding -> MuseV's IP-Adapter tokens (conditional and unconditional)."""

    DESCRIPTION = (
        "MuseV's IP-Adapter image prompt: the CLIP vision model (ViT-H IP-Adapter image encoder, Load CLIP Vision) "
        "embeds the image, MuseV's ip_adapter_image_proj.bin turns the embedding into 4 tokens. The unconditional "
        "branch gets the projection of a zero embedding, as in MuseV. The tokens enter only the 16 spatial "
        "cross-attentions of a musev_referencenet MODEL, added to the text attention with 'scale'.")
    CATEGORY = "MuseV"
    FUNCTION = "embed"
    RETURN_TYPES = (IP_TOKENS_TYPE,)
    RETURN_NAMES = ("ip_tokens",)
    OUTPUT_TOOLTIPS = ("IP tokens for MuseV Parallel Denoise Sampler and MuseV ReferenceNet Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision": ("CLIP_VISION", {"tooltip": "IP-Adapter image encoder (MuseV: IP-Adapter/models/"
                                                       "image_encoder, OpenCLIP ViT-H/14) from Load CLIP Vision."}),
            "image": ("IMAGE", {"tooltip": "Image prompt (MuseV: the condition image). Several images give "
                                           "4 tokens each, concatenated."}),
            "image_proj_name": (image_proj_files(), {
                "tooltip": "MuseV's image projection in models/musev, e.g. musev_referencenet/"
                           "ip_adapter_image_proj.bin (use the one next to the UNet you load)."}),
            "scale": ("FLOAT", {"default": 1.0, "min": finite(0.0), "max": 5.0, "step": 0.05,
                                "tooltip": "Weight of the IP attention added to the text attention (MuseV "
                                           "ip_adapter_scale 1.0); 0 turns the image prompt off."}),
            "crop": (["center", "none"], {"default": "center",
                                          "tooltip": "Centre-crop to a square before the encoder (MuseV: centre)."}),
        }}

    @names_node("MuseV IP-Adapter Embed")
    def embed(self, clip_vision, image, image_proj_name, scale, crop):
        if image.shape[0] == 0:
            raise ValueError("the image input holds no frames: connect the image prompt (e.g. Load Image)")
        path = model_folders.resolve("musev", image_proj_name)
        projection = _IMAGE_PROJ_CACHE.get((path,), lambda: load_image_projection(path, image_proj_name))
        output = clip_vision.encode_image(image[..., :3], crop=crop == "center")
        embeds = output["image_embeds"].float().cpu()
        cond, uncond = project_ip_tokens(projection, embeds)
        return (IPTokens(cond=cond, uncond=uncond, scale=float(scale)),)
