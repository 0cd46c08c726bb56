"""Nodes: MuseV DWPose Extract and MuseV Pose Align (pose_align/ behind ComfyUI types, spec/pose.md §3.8)."""
from __future__ import annotations

import os

import numpy as np
import torch

import comfy.model_management
import comfy.utils

from ..pose_align import align as pose_alignment
from ..pose_align.draw import draw_pose
from ..pose_align.dwpose import DWPoseDetector
from ..pose_align.image import aligned_output_size, pose_map_size
from ..pose_align.keypoints import as_pose_frames, to_pose_keypoint
from . import model_folders
from .errors import names_node


def _files(keyword: str) -> list[str]:
    files = model_folders.list_files("dwpose")
    preferred = [f for f in files if keyword in os.path.basename(f).lower()]
    return preferred + [f for f in files if f not in preferred]


_DETECTOR_CACHE = model_folders.LastModelCache()


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """One IMAGE frame `h w c` float [0, 1] -> `h w 3` uint8 RGB."""
    return (image[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _to_image(frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 `h w 3` frames -> IMAGE `b h w 3` float32."""
    return torch.from_numpy(np.stack(frames)).float() / 255.0


class MuseVDWPoseExtract:
    """DWPose whole-body poses of every frame (onnxruntime; no mmcv/mmpose)."""

    DESCRIPTION = (
        "DWPose (YOLOX person detector + dw-ll_ucoco_384 whole-body pose model, ONNX files in models/dwpose) on every "
        "frame. Outputs the pose maps in the standard ControlNet OpenPose colours and POSE_KEYPOINT in "
        "comfyui_controlnet_aux's format, so either pack's pose nodes can use them. Runs on CUDA when onnxruntime-gpu "
        "is installed, else on the CPU.")
    CATEGORY = "MuseV/pose"
    FUNCTION = "extract"
    RETURN_TYPES = ("IMAGE", "POSE_KEYPOINT")
    RETURN_NAMES = ("pose_image", "pose_keypoint")
    OUTPUT_TOOLTIPS = ("Pose maps (black background, OpenPose palette), short side = resolution.",
                       "Keypoints per frame (canvas = the input frame size, pixels).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Frames of the driving video (or one character image)."}),
            "bbox_detector": (_files("yolox"), {"tooltip": "YOLOX person detector ONNX (yolox_l.onnx) in "
                                                           "models/dwpose."}),
            "pose_estimator": (_files("dw-ll"), {"tooltip": "DWPose whole-body ONNX (dw-ll_ucoco_384.onnx) in "
                                                            "models/dwpose."}),
            "detect_body": ("BOOLEAN", {"default": True, "tooltip": "Draw and output the 18 body points."}),
            "detect_hand": ("BOOLEAN", {"default": True, "tooltip": "Draw and output the 2 x 21 hand points."}),
            "detect_face": ("BOOLEAN", {"default": False, "tooltip": "Draw and output the 68 face points (MuseV's "
                                                                      "pose videos have none)."}),
            "detect_resolution": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64,
                                          "tooltip": "Frames are resized so the short side is this before "
                                                     "detection (ControlNet's rule)."}),
            "resolution": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 8,
                                   "tooltip": "Short side of the output pose maps."}),
            "provider": (["auto", "CPU", "CUDA"], {"default": "auto",
                                                   "tooltip": "onnxruntime execution provider; auto = CUDA when "
                                                              "available."}),
        }}

    @names_node("MuseV DWPose Extract")
    def extract(self, image, bbox_detector, pose_estimator, detect_body, detect_hand, detect_face,
                detect_resolution, resolution, provider):
        if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"the image input is empty ({image.shape[0]} frames of {image.shape[2]}x{image.shape[1]} "
                             f"px): connect at least one frame (Load Image, or the images of Get Video Components)")
        det_path = model_folders.resolve("dwpose", bbox_detector)
        pose_path = model_folders.resolve("dwpose", pose_estimator)
        detector = _DETECTOR_CACHE.get((det_path, pose_path),
                                       lambda: DWPoseDetector(det_path, pose_path, providers=provider.lower()),
                                       options=(provider,))
        frames, keypoints = [], []
        progress = comfy.utils.ProgressBar(image.shape[0])
        height, width = image.shape[1], image.shape[2]
        out_w, out_h = pose_map_size(width, height, resolution)
        for index in range(image.shape[0]):
            comfy.model_management.throw_exception_if_processing_interrupted()
            pose = detector.detect(_to_uint8(image[index]), detect_resolution=detect_resolution)
            keypoints.append(to_pose_keypoint(pose, body=detect_body, hands=detect_hand, face=detect_face))
            frames.append(draw_pose(pose, out_w, out_h, body=detect_body, hands=detect_hand, face=detect_face))
            progress.update(1)
        return (_to_image(frames), keypoints)


class MuseVPoseAlign:
    """MusePose's pose alignment: rescale the driving skeleton to the character's body proportions."""

    DESCRIPTION = (
        "MusePose's pose alignment: the driving video's skeleton is rescaled limb by limb to the proportions of the "
        "character in the reference pose and placed like the reference, so the ControlNet makes the character move "
        "without changing shape. 'robust' (default) also handles frames with missing keypoints or no person; "
        "'compat' reproduces MusePose exactly, including its quirks. Frames without a person come out empty and are "
        "listed in 'report'.")
    CATEGORY = "MuseV/pose"
    FUNCTION = "align"
    RETURN_TYPES = ("IMAGE", "POSE_KEYPOINT", "STRING")
    RETURN_NAMES = ("pose_image", "pose_keypoint", "report")
    OUTPUT_TOOLTIPS = ("Aligned pose maps at the reference's aspect ratio (or width x height).",
                       "Aligned keypoints (person 0 per frame).",
                       "Scales used and the frames where the person or keypoints were missing.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ref_pose": ("POSE_KEYPOINT", {"tooltip": "Pose of the character image (first frame, person 0), e.g. "
                                                      "from MuseV DWPose Extract or comfyui_controlnet_aux's DWPose."}),
            "video_pose": ("POSE_KEYPOINT", {"tooltip": "Poses of the driving video, one per frame."}),
            "align_frame": ("INT", {"default": 0, "min": 0, "max": 100000,
                                    "tooltip": "Video frame whose skeleton is matched to the reference (MusePose "
                                               "align_frame)."}),
            "max_frame": ("INT", {"default": 0, "min": 0, "max": 100000,
                                  "tooltip": "Use at most this many video frames; 0 = all (MusePose's default is "
                                             "300)."}),
            "mode": (list(pose_alignment.MODES), {"default": "robust",
                     "tooltip": "robust: fixes MusePose's missing-keypoint bugs; compat: MusePose's exact output."}),
            "output_height": ("INT", {"default": 768, "min": 64, "max": 4096, "step": 8,
                                      "tooltip": "Height of the pose maps; width follows the reference's aspect "
                                                 "ratio (MusePose: 768)."}),
            "draw_hands": ("BOOLEAN", {"default": True, "tooltip": "Draw the hands (MusePose does)."}),
            "draw_face": ("BOOLEAN", {"default": False, "tooltip": "Draw the face (MusePose does not)."}),
        }, "optional": {
            "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                              "tooltip": "Force the output width (e.g. the video's); 0 = from the reference."}),
        }}

    @names_node("MuseV Pose Align")
    def align(self, ref_pose, video_pose, align_frame, max_frame, mode, output_height, draw_hands, draw_face,
              width=0):
        reference = as_pose_frames(ref_pose)
        video = as_pose_frames(video_pose)
        if not reference:
            raise ValueError("ref_pose holds no frame: connect the pose of the character image")
        if not video:
            raise ValueError("video_pose holds no frame: connect the poses of the driving video")
        aligned, report = pose_alignment.align_pose_sequence(reference[0], video, align_frame=align_frame,
                                                             max_frame=max_frame or None, mode=mode)
        out_w, out_h = aligned_output_size(reference[0].width, reference[0].height, output_height)
        out_w = width or out_w
        images, keypoints = [], []
        progress = comfy.utils.ProgressBar(len(aligned))
        for frame in aligned:
            comfy.model_management.throw_exception_if_processing_interrupted()
            images.append(draw_pose(frame, out_w, out_h, body=True, hands=draw_hands, face=draw_face))
            keypoints.append(to_pose_keypoint(frame, hands=draw_hands, face=draw_face, canvas_size=(out_w, out_h)))
            progress.update(1)
        return (_to_image(images), keypoints, report.summary())
