"""DWPose extraction (onnxruntime), MusePose pose alignment and OpenPose-style rendering, in numpy / OpenCV:
no ComfyUI import anywhere in this package; OpenCV and onnxruntime are imported only where they are used
(`optional`: the install hint when one is missing, onnxruntime's telemetry switched off before its first import).

- `keypoints`: PoseFrame / PersonPose (normalised coordinates + scores) and the POSE_KEYPOINT format.
- `dwpose`: YOLOX + DWPose-l whole-body ONNX pipeline (`DWPoseDetector`), signature checks (`PoseModelError`).
- `align`: MusePose's alignment, "robust" and "compat" modes (`align_pose_sequence`, `NoPersonError`).
- `draw`: rendering in the ControlNet OpenPose palette (`draw_pose`).
- `image`: ControlNet input conditioning and output-size rules.
"""
from .align import MODES, SCALE_NAMES, AlignReport, FrameAlignment, NoPersonError, align_pose_sequence
from .draw import PALETTES, STROKES, draw_pose, draw_pose_sequence
from .dwpose import DWPoseDetector, PoseModelError, WholebodyPose, YoloxDetector, select_providers
from .image import aligned_output_size, detection_size, hwc3, pose_map_size, resize_for_detection
from .keypoints import (VISIBLE_SCORE, PersonPose, PoseFrame, as_pose_frames, frame_from_pose_keypoint,
                        from_pose_keypoint, to_pose_keypoint, to_pose_keypoint_list)

__all__ = [
    "MODES", "SCALE_NAMES", "AlignReport", "FrameAlignment", "NoPersonError", "align_pose_sequence",
    "PALETTES", "STROKES", "draw_pose", "draw_pose_sequence",
    "DWPoseDetector", "PoseModelError", "WholebodyPose", "YoloxDetector", "select_providers",
    "aligned_output_size", "detection_size", "hwc3", "pose_map_size", "resize_for_detection",
    "VISIBLE_SCORE", "PersonPose", "PoseFrame", "as_pose_frames", "frame_from_pose_keypoint", "from_pose_keypoint",
    "to_pose_keypoint", "to_pose_keypoint_list",
]
