"""Node: Load MuseV UNet (MODEL + MuseV motion checkpoint -> MODEL)."""
from __future__ import annotations

from ..musev_core.checkpoint import CheckpointFile
from . import model_folders
from .errors import names_node
from .musev_model import apply_motion, build_motion_patcher


def motion_checkpoint_files() -> list[str]:
    """Files of the `musev` folder that can be motion UNets (ReferenceNet and image-projection files left out)."""
    files = model_folders.list_files("musev")
    keep = []
    for name in files:
        parts = name.replace("\\", "/").split("/")
        if "referencenet" in parts[:-1] or "image_proj" in parts[-1]:
            continue
        keep.append(name)
    return keep


class LoadMuseVUNet:
    """Adds MuseV's temporal layers (from a MuseV motion checkpoint) to an SD1.5 MODEL."""

    DESCRIPTION = (
        "Adds MuseV's temporal layers to an SD1.5 MODEL. Only the motion (non-SD) weights of the MuseV checkpoint are "
        "used; the spatial UNet is your MODEL, with its LoRAs, exactly as MuseV swaps in its text-to-image base. "
        "Connect the result to 'MuseV Parallel Denoise Sampler'.")
    CATEGORY = "MuseV"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The MODEL with MuseV's temporal convolutions, temporal attentions, frame embedding and "
                       "reference-only attention attached.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5 MODEL (any fine-tune, LoRAs allowed), e.g. from Load Checkpoint."}),
            "unet_name": (motion_checkpoint_files(), {
                "tooltip": "MuseV motion checkpoint in models/musev, e.g. musev/unet/diffusion_pytorch_model.safetensors "
                           "from the Hugging Face repo TMElyralab/MuseV (its motion/ folder)."}),
        }}

    @names_node("Load MuseV UNet")
    def load(self, model, unet_name):
        path = model_folders.resolve("musev", unet_name)
        with CheckpointFile(path, unet_name) as checkpoint:  # reads only the MuseV tensors
            motion_patcher, _info = build_motion_patcher(model, checkpoint, unet_name)
        return (apply_motion(model, motion_patcher),)
