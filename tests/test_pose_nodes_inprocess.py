"""MuseV DWPose Extract and MuseV Pose Align as ComfyUI nodes, with the ONNX stand-ins (tests/pose_stand_ins.py)."""
import os

import numpy as np
import pytest
import torch

import comfy_env
import pose_stand_ins


@pytest.fixture(scope="module")
def pose_env(comfy, tmp_path_factory):
    import folder_paths
    folder = str(tmp_path_factory.mktemp("dwpose"))
    models = pose_stand_ins.build_all(folder)
    models["detector_none"] = pose_stand_ins.make_detector(os.path.join(folder, "yolox_empty.onnx"), plants={})
    folder_paths.folder_names_and_paths["dwpose"] = ([folder], {".onnx"})
    nodes = comfy_env.pack_module("nodes.pose_nodes")
    return {"models": {k: os.path.basename(v) for k, v in models.items()}, "nodes": nodes}


def frames(count=3):
    cone = pose_stand_ins.cone_image(width=320, height=180, center=(150, 100), radius=12.0)
    return torch.from_numpy(np.stack([cone] * count)).float() / 255.0


def extract(pose_env, detector="detector", pose="pose_blob", image=None, **options):
    settings = {"detect_body": True, "detect_hand": True, "detect_face": False, "detect_resolution": 512,
                "resolution": 256, "provider": "CPU"}
    settings.update(options)
    node = pose_env["nodes"].MuseVDWPoseExtract()
    return node.extract(frames() if image is None else image, pose_env["models"][detector],
                        pose_env["models"][pose], **settings)


def test_extract_gives_pose_maps_and_pose_keypoint_per_frame(pose_env):
    images, keypoints = extract(pose_env, detector="detector_d1")
    assert images.shape == (3, 256, 455, 3) and images.dtype == torch.float32  # short side 256, 320x180 aspect
    assert len(keypoints) == 3
    first = keypoints[0]
    assert (first["canvas_width"], first["canvas_height"]) == (320, 180)
    person = first["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and person["face_keypoints_2d"] is None
    nose = person["pose_keypoints_2d"][:3]
    assert abs(nose[0] - 150) < 3 and abs(nose[1] - 100) < 3 and nose[2] == 1.0
    assert images.max() > 0.5  # something was drawn


def test_wrong_onnx_file_is_named_with_what_is_wrong(pose_env):
    dwpose = comfy_env.pack_module("pose_align.dwpose")
    with pytest.raises(dwpose.PoseModelError) as err:
        extract(pose_env, detector="pose_blob", pose="pose_blob")
    message = str(err.value)
    # the node's display name first (the pack's errors name the node; their type is MuseV.PoseModelError)
    assert message.startswith("MuseV DWPose Extract: dw-ll_ucoco_384_blob.onnx: expected a YOLOX detector"), message
    assert type(err.value).__module__ == "MuseV"


def test_align_follows_the_reference_and_reports_missing_frames(pose_env):
    _, reference = extract(pose_env, detector="detector_d1", image=frames(1))
    _, video = extract(pose_env, detector="detector_d1")
    video = [video[0], {"people": [], "canvas_width": 320, "canvas_height": 180}, video[2]]
    node = pose_env["nodes"].MuseVPoseAlign()
    images, aligned, report = node.align(reference, video, align_frame=0, max_frame=0, mode="robust",
                                         output_height=128, draw_hands=True, draw_face=False)
    assert images.shape[0] == 3 and images.shape[1] == 128
    assert aligned[1]["people"] == [] and len(aligned[0]["people"]) == 1
    assert "no person in 1 frame(s): 1" in report and report.startswith("3 frames aligned (robust)")
    # the reference and the video show the same pose, so alignment keeps the nose where it was (normalised)
    nose = aligned[0]["people"][0]["pose_keypoints_2d"]
    assert abs(nose[0] / aligned[0]["canvas_width"] - 150 / 320) < 0.02
    assert abs(nose[1] / aligned[0]["canvas_height"] - 100 / 180) < 0.02


def test_a_video_without_a_person_gives_a_clear_message(pose_env):
    align = comfy_env.pack_module("pose_align.align")
    _, reference = extract(pose_env, detector="detector_d1", image=frames(1))
    _, video = extract(pose_env, detector="detector_none")
    assert all(frame["people"] == [] for frame in video)
    node = pose_env["nodes"].MuseVPoseAlign()
    with pytest.raises(align.NoPersonError) as err:
        node.align(reference, video, 0, 0, "robust", 128, True, False)
    assert "no person" in str(err.value).lower()


def _figure(cx: float, top: float, s: float, width: int, height: int) -> dict:
    """A hand-written standing person in comfyui_controlnet_aux's POSE_KEYPOINT format (pixels, [x, y, 1])."""
    body = {0: (0, 0), 1: (0, 40), 2: (-30, 40), 3: (-40, 90), 4: (-45, 135), 5: (30, 40), 6: (40, 90),
            7: (45, 135), 8: (-18, 150), 9: (-20, 230), 10: (-22, 300), 11: (18, 150), 12: (20, 230),
            13: (22, 300), 14: (-8, -8), 15: (8, -8), 16: (-16, -4), 17: (16, -4)}
    flat = []
    for index in range(18):
        dx, dy = body[index]
        flat += [cx + s * dx, top + s * dy, 1.0]
    return {"people": [{"pose_keypoints_2d": flat, "face_keypoints_2d": None, "hand_left_keypoints_2d": None,
                        "hand_right_keypoints_2d": None}], "canvas_width": width, "canvas_height": height}


@pytest.mark.parametrize("mode", ["robust", "compat"])
def test_controlnet_aux_pose_keypoint_drives_the_alignment(pose_env, mode):
    reference = [_figure(256, 150, 1.5, 512, 768)]
    video = [_figure(200 + 10 * i, 300, 0.8, 512, 768) for i in range(4)]
    node = pose_env["nodes"].MuseVPoseAlign()
    images, aligned, report = node.align(reference, video, 0, 0, mode, 768, True, False, width=512)
    assert images.shape == (4, 768, 512, 3) and len(aligned) == 4

    def length(frame, a, b):
        points = frame["people"][0]["pose_keypoints_2d"]
        ax, ay, bx, by = points[3 * a], points[3 * a + 1], points[3 * b], points[3 * b + 1]
        return ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5 / frame["canvas_height"]

    # at the align frame every limb takes the character's length (MusePose's per-limb scales)
    for a, b in ((1, 2), (2, 3), (3, 4), (1, 8), (8, 9), (9, 10)):
        assert abs(length(aligned[0], a, b) - length(reference[0], a, b)) < 1e-3, (mode, a, b)
    # later frames move like the video: the horizontal drift of the neck is kept (scaled)
    neck_x = [frame["people"][0]["pose_keypoints_2d"][3] for frame in aligned]
    assert neck_x[0] < neck_x[1] < neck_x[2] < neck_x[3]


def test_cancel_stops_extraction_between_frames(pose_env):
    import comfy.model_management
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            extract(pose_env, detector="detector_d1")
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert len(extract(pose_env, detector="detector_d1")[1]) == 3
