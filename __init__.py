"""MuseV for ComfyUI: MuseV's temporal layers and visual-conditioned parallel denoising as ComfyUI nodes.

Loaded by ComfyUI as a custom-node pack. Pure model code lives in `musev_core` (no ComfyUI import); the ComfyUI
adapter and node classes live in `nodes`.
"""
import importlib.util

NODE_CLASS_MAPPINGS = {}

# Outside ComfyUI (pytest collecting this folder as a package, tooling) there is nothing to register.
if importlib.util.find_spec("folder_paths") is not None:
    from .nodes.model_folders import register_model_folders
    from .nodes.musepose_nodes import (LoadMusePose, MusePoseDDIMSampler, MusePoseImageConditioning,
                                       MusePoseReferenceEncode, MusePoseSampler, MusePoseScheduler)
    from .nodes.pose_nodes import MuseVDWPoseExtract, MuseVPoseAlign
    from .nodes.reference_nodes import MuseVIPAdapterEmbed, MuseVReferenceNetEncode
    from .nodes.sampler import MuseVParallelDenoiseSampler
    from .nodes.unet_loader import LoadMuseVUNet

    register_model_folders()
    NODE_CLASS_MAPPINGS.update({
        "LoadMuseVUNet": LoadMuseVUNet,
        "MuseVParallelDenoiseSampler": MuseVParallelDenoiseSampler,
        "MuseVReferenceNetEncode": MuseVReferenceNetEncode,
        "MuseVIPAdapterEmbed": MuseVIPAdapterEmbed,
        "MuseVDWPoseExtract": MuseVDWPoseExtract,
        "MuseVPoseAlign": MuseVPoseAlign,
        "LoadMusePose": LoadMusePose,
        "MusePoseImageConditioning": MusePoseImageConditioning,
        "MusePoseReferenceEncode": MusePoseReferenceEncode,
        "MusePoseSampler": MusePoseSampler,
        "MusePoseDDIMSampler": MusePoseDDIMSampler,
        "MusePoseScheduler": MusePoseScheduler,
    })

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadMuseVUNet": "Load MuseV UNet",
    "MuseVParallelDenoiseSampler": "MuseV Parallel Denoise Sampler",
    "MuseVReferenceNetEncode": "MuseV ReferenceNet Encode",
    "MuseVIPAdapterEmbed": "MuseV IP-Adapter Embed",
    "MuseVDWPoseExtract": "MuseV DWPose Extract",
    "MuseVPoseAlign": "MuseV Pose Align",
    "LoadMusePose": "Load MusePose",
    "MusePoseImageConditioning": "MusePose Image Conditioning",
    "MusePoseReferenceEncode": "MusePose Reference Encode",
    "MusePoseSampler": "MusePose Sampler",
    "MusePoseDDIMSampler": "MusePose DDIM Sampler",
    "MusePoseScheduler": "MusePose Scheduler",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
