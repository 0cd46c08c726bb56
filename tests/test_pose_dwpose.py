"""DWPose extraction on onnxruntime with tiny stand-in models of the real signatures (spec/pose.md §1, §5.1-5.2).

No real weights: tests/pose_stand_ins.py builds ONNX files with yolox_l.onnx's and dw-ll_ucoco_384.onnx's tensor
names, ranks and dtypes whose outputs make the expected boxes and keypoints known exactly.
"""
import os

import numpy as np
import pytest

import pose_stand_ins as stand_ins  # needs onnx (tests/requirements.txt): a missing test dependency fails, not skips
from pose_align import DWPoseDetector, PoseModelError, to_pose_keypoint
from pose_align.dwpose import (WholebodyPose, YoloxDetector, box_center_scale, coco_wholebody_to_openpose,
                               crop_matrix, letterbox, nms, select_providers)

BLACK_1280x720 = np.zeros((720, 1280, 3), np.uint8)


def close(actual, expected, atol=1e-12):
    """Absolute comparison only (assert_allclose's default rtol=1e-7 would hide small errors)."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return stand_ins.build_all(str(tmp_path_factory.mktemp("dwpose_stand_ins")))


@pytest.fixture(scope="module")
def detector(models):
    return DWPoseDetector(models["detector"], models["pose_const"], providers="cpu")


def expected_const_point(k, center=(640.0, 480.0), crop_w=750.0):
    """Image position of const keypoint k (model order) for box D1: x = (x_crop - 144) / k + c_x, k = 288 / 750."""
    x_crop, y_crop = stand_ins.const_crop_location(k)
    scale = 288.0 / crop_w
    return np.array([(x_crop - 144) / scale + center[0], (y_crop - 192) / scale + center[1]])


# ---------------------------------------------------------------------------------------------------------------
# stand-ins are faithful to the real signatures

def test_stand_ins_have_the_real_signatures(models):
    import onnx
    import onnxruntime as ort
    for role in ("detector", "pose_const", "pose_const_static", "pose_blob"):
        model = onnx.load(models[role])
        onnx.checker.check_model(model)
        assert model.opset_import[0].version == 11 and model.ir_version == 7
    det = ort.InferenceSession(models["detector"], providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in det.get_inputs()] == [("images", "tensor(float)", [1, 3, 640, 640])]
    assert [(o.name, o.type, o.shape) for o in det.get_outputs()] == [("output", "tensor(float)", [1, 8400, 85])]
    pose = ort.InferenceSession(models["pose_const"], providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in pose.get_inputs()] == [("input", ["batch", 3, 384, 288])]
    assert [(o.name, o.type, o.shape) for o in pose.get_outputs()] == [
        ("simcc_x", "tensor(float)", ["batch", 133, 576]), ("simcc_y", "tensor(float)", ["batch", 133, 768])]


def test_static_batch_model_rejects_two_crops(models):
    # why the pose stage loops over crops when the batch dimension is the integer 1
    import onnxruntime as ort
    session = ort.InferenceSession(models["pose_const_static"], providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)invalid|dimension"):
        session.run(None, {"input": np.zeros((2, 3, 384, 288), np.float32)})


# ---------------------------------------------------------------------------------------------------------------
# detector

def test_letterbox_pastes_top_left_on_114():
    image = np.full((720, 1280, 3), 255, np.uint8)
    blob, ratio = letterbox(image)
    assert ratio == 0.5 and blob.shape == (1, 3, 640, 640) and blob.dtype == np.float32
    assert (blob[0, :, :360, :] == 255).all()      # 1280x720 -> 640x360, no scaling to 0..1
    assert (blob[0, :, 360:, :] == 114).all()


def test_nms_uses_plus_one_areas_and_strict_threshold():
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9], [100, 100, 110, 110]], float)
    # +1 areas: 100 each, intersection 5 * 10 = 50, IoU = 50 / 150 = 1/3
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.34).tolist() == [0, 1, 2]
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.33).tolist() == [0, 2]
    assert nms(boxes, np.array([0.5, 0.8, 0.9]), 0.33).tolist() == [2, 1]


@pytest.mark.parametrize("width, height", [(1280, 720), (720, 1280), (1000, 800)])
def test_detector_boxes_follow_the_letterbox_ratio(models, width, height):
    boxes, scores = YoloxDetector(models["detector"], ["CPUExecutionProvider"])(np.zeros((height, width, 3),
                                                                                         np.uint8))
    ratio = min(640 / height, 640 / width)
    # D1 kept, D2 suppressed, D3 kept, chair D4 and low-score D5 dropped; centres on cells, no +0.5, not clipped
    expected = stand_ins.EXPECTED_BOXES_1280x720 * 0.5 / ratio
    close(boxes, expected, atol=1e-3)
    close(scores, stand_ins.EXPECTED_SCORES, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# pose: crop geometry, SimCC decode, OpenPose conversion

def test_box_to_crop_geometry():
    center, scale = box_center_scale([480, 80, 800, 880], (288, 384))
    assert center.tolist() == [640, 480]
    assert scale.tolist() == [750, 1000]       # (320, 800) * 1.25 = (400, 1000), widened to 3:4
    center, scale = box_center_scale([0, 0, 400, 100], (288, 384))
    assert scale.tolist() == [500, 500 / 0.75]  # wide box: heightened
    matrix = crop_matrix(np.array([640.0, 480.0]), np.array([750.0, 1000.0]), (288, 384))
    close(matrix @ [640, 480, 1], [144, 192])
    close(matrix @ [265, -20, 1], [0, 0], atol=1e-12)


def test_const_model_decodes_exact_points(detector):
    boxes, _, keypoints, scores = detector.detect_pixels(BLACK_1280x720)
    assert keypoints.shape == (2, 134, 2) and scores.shape == (2, 134)
    person = keypoints[0]
    # spec §5.2 values: model k=0 -> OP0, k=6 (R shoulder) -> OP2, k=91 (first left-hand point) -> 134-index 92
    close(person[0], [291.0417, 32.0833], atol=1e-3)
    close(person[2], [322.2917, 63.3333], atol=1e-3)
    close(person[92], [765.0, 506.0417], atol=1e-3)
    for op, coco in enumerate(stand_ins_openpose_sources()):
        if coco is not None:
            close(person[op], expected_const_point(coco), atol=1e-3)
    close(person[1], (expected_const_point(5) + expected_const_point(6)) / 2, atol=1e-3)
    for k in range(23, 133):  # face and hands move up by one (the neck is inserted at 17)
        close(person[k + 1], expected_const_point(k), atol=1e-3)
    # min rule: COCO left eye (OP15) 0.9 on x and 0.25 on y scores 0.25; ears 0.2; neck 1 (both shoulders > 0.3)
    close(scores[0, [15, 16, 17]], [0.25, 0.2, 0.2], atol=1e-6)
    assert scores[0, 1] == 1.0
    visible = np.flatnonzero(scores[0, :18] >= 0.3).tolist()
    assert visible == list(range(15))


def stand_ins_openpose_sources():
    from pose_align.keypoints import OPENPOSE_FROM_COCO
    return OPENPOSE_FROM_COCO


def test_second_person_uses_its_own_box(detector):
    _, _, keypoints, _ = detector.detect_pixels(BLACK_1280x720)
    # D3 box (960, 192, 1152, 576): centre (1056, 384), scale (240, 480) -> (360, 480), k = 0.8
    x_crop, y_crop = stand_ins.const_crop_location(0)
    close(keypoints[1, 0], [(x_crop - 144) / 0.8 + 1056, (y_crop - 192) / 0.8 + 384],
                               atol=1e-3)


def test_coco_to_openpose_neck_rule():
    keypoints = np.zeros((1, 133, 2))
    keypoints[0, 5], keypoints[0, 6] = (10, 20), (30, 40)
    scores = np.full((1, 133), 0.9)
    scores[0, 6] = 0.3  # not > 0.3: the neck is placed but scored 0
    points, point_scores = coco_wholebody_to_openpose(keypoints, scores)
    assert points[0, 1].tolist() == [20, 30] and point_scores[0, 1] == 0.0
    assert points[0, 2].tolist() == [30, 40] and points[0, 5].tolist() == [10, 20]


def test_dynamic_batch_runs_once_static_batch_loops(models):
    class Counting:
        def __init__(self, session):
            self.session, self.calls = session, []

        def run(self, names, feeds):
            self.calls.append(next(iter(feeds.values())).shape[0])
            return self.session.run(names, feeds)

    results = {}
    for role in ("pose_const", "pose_const_static"):
        pose = WholebodyPose(models[role], ["CPUExecutionProvider"])
        pose.session = Counting(pose.session)
        boxes = stand_ins.EXPECTED_BOXES_1280x720
        results[role] = pose(BLACK_1280x720, boxes)
        assert pose.session.calls == ([2] if role == "pose_const" else [1, 1])
    np.testing.assert_array_equal(results["pose_const"][0], results["pose_const_static"][0])


def test_float16_input_model(tmp_path):
    path = stand_ins.make_pose_const(str(tmp_path / "dw-ll_ucoco_384_fp16.onnx"), fp16_input=True)
    pose = WholebodyPose(path, ["CPUExecutionProvider"])
    assert pose.input_dtype == np.float16
    keypoints, scores = pose(BLACK_1280x720, stand_ins.EXPECTED_BOXES_1280x720[:1])
    close(keypoints[0, 0], expected_const_point(0), atol=1e-9)
    close(scores[0, 0], 0.9, atol=1e-6)


def test_blob_end_to_end_geometry(models):
    detector = DWPoseDetector(models["detector_d1"], models["pose_blob"], providers="cpu")
    frame = detector.detect(stand_ins.cone_image())
    assert len(frame.people) == 1 and (frame.width, frame.height) == (1280, 720)
    person = frame.people[0]
    tolerance = 750 / 288  # one crop pixel in image pixels
    for part in ("body", "face", "left_hand", "right_hand"):
        shown = person.visible(part)
        pixels = getattr(person, part)[shown] * [1280, 720]
        assert np.abs(pixels - [610, 430]).max() <= tolerance, part
    # only the COCO ears (OP16, OP17) are invisible; visible scores are sigmoid(white) = 0.915
    assert np.flatnonzero(~person.visible("body")).tolist() == [16, 17]
    assert person.visible("face").all() and person.visible("left_hand").all() and person.visible("right_hand").all()
    close(person.body_score[[0, 2, 5]], 0.9152, atol=1e-3)


def test_detect_resolution_keeps_normalised_coordinates(models):
    detector = DWPoseDetector(models["detector_d1"], models["pose_blob"], providers="cpu")
    image = stand_ins.cone_image()
    full = detector.detect(image).people[0]
    small = detector.detect(image, detect_resolution=512)  # 1280x720 -> 896x512 before the models
    assert (small.width, small.height) == (1280, 720)      # canvas stays the input frame
    nose = small.people[0].body[0]
    assert abs(nose[0] - full.body[0][0]) < 0.01 and abs(nose[1] - full.body[0][1]) < 0.01
    assert abs(nose[0] - 610 / 1280) < 0.01 and abs(nose[1] - 430 / 720) < 0.01


def test_no_detection_gives_no_people_or_full_image_box(models):
    no_people = stand_ins.make_detector(os.path.join(os.path.dirname(models["detector"]), "yolox_empty.onnx"),
                                        plants={})
    detector = DWPoseDetector(no_people, models["pose_const"], providers="cpu")
    frame = detector.detect(BLACK_1280x720)
    assert frame.people == []
    assert to_pose_keypoint(frame) == {"people": [], "canvas_width": 1280, "canvas_height": 720}
    fallback = DWPoseDetector(no_people, models["pose_const"], providers="cpu", full_image_fallback=True)
    boxes, _, keypoints, _ = fallback.detect_pixels(BLACK_1280x720)
    assert boxes.tolist() == [[0, 0, 1280, 720]]
    # whole-image box: centre (640, 360), scale (1600, 900) -> (1600, 2133.3), k = 288 / 1600
    close(keypoints[0, 0], [(10 - 144) / 0.18 + 640, (20 - 192) / 0.18 + 360], atol=1e-3)


def test_pose_keypoint_output_of_an_extraction(models):
    detector = DWPoseDetector(models["detector"], models["pose_const"], providers="cpu")
    assert detector.active_providers == ["CPUExecutionProvider"]
    data = to_pose_keypoint(detector.detect(BLACK_1280x720))
    assert (data["canvas_width"], data["canvas_height"]) == (1280, 720) and len(data["people"]) == 2
    person = data["people"][0]
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    close(body[0], [291.0417, 32.0833, 1.0], atol=1e-3)  # pixels, c = 1
    assert body[15:].tolist() == [[0.0, 0.0, 0.0]] * 3                         # OP15-17 invisible
    face = np.array(person["face_keypoints_2d"]).reshape(70, 3)
    close(face[68], body[14])                            # the pupils: OP14, then OP15
    assert face[69].tolist() == [0.0, 0.0, 0.0]
    assert len(person["hand_left_keypoints_2d"]) == 63 and len(person["hand_right_keypoints_2d"]) == 63


# ---------------------------------------------------------------------------------------------------------------
# wrong files and providers

def test_wrong_files_give_clear_errors(models, tmp_path):
    # the detector given as the pose model
    with pytest.raises(PoseModelError) as error:
        WholebodyPose(stand_ins.make_detector(str(tmp_path / "dw-ll_ucoco_384.onnx")))
    assert str(error.value) == (
        "dw-ll_ucoco_384.onnx: expected a whole-body SimCC pose model with one float input of shape (B, 3, H, W) "
        "and two outputs simcc_x (B, 133, k*W) and simcc_y (B, 133, k*H); it has 1 output (inputs [images float "
        "(1, 3, 640, 640)], outputs [output float (1, 8400, 85)])")
    # the pose model given as the detector
    with pytest.raises(PoseModelError) as error:
        YoloxDetector(models["pose_const"])
    message = str(error.value)
    assert message.startswith("dw-ll_ucoco_384.onnx: expected a YOLOX detector with one float input of shape "
                              "(1, 3, H, W)")
    assert "it has 2 outputs" in message and "simcc_x float (" in message
    rank3 = stand_ins.make_detector(str(tmp_path / "yolox_l.onnx"), input_shape=(1, 3, 640))
    with pytest.raises(PoseModelError, match=r"^yolox_l\.onnx: expected a YOLOX detector .*; its input has rank 3 "
                                             r"\(inputs \[images float \(1, 3, 640\)\]"):
        YoloxDetector(rank3)


def test_pose_model_checks(tmp_path):
    body_only = stand_ins.make_pose_const(str(tmp_path / "rtmpose_body.onnx"), keypoints=17)
    with pytest.raises(PoseModelError, match=r"rtmpose_body\.onnx: .*17 and 17 keypoints, not 133"):
        WholebodyPose(body_only)
    odd = stand_ins.make_pose_const(str(tmp_path / "odd.onnx"), x_length=500)
    with pytest.raises(PoseModelError, match=r"odd\.onnx: .*simcc_x length 500 / input width 288"):
        WholebodyPose(odd)
    # other output names are taken in order
    renamed = stand_ins.make_pose_const(str(tmp_path / "renamed.onnx"), names=("out0", "out1"))
    keypoints, _ = WholebodyPose(renamed)(BLACK_1280x720, stand_ins.EXPECTED_BOXES_1280x720[:1])
    close(keypoints[0, 0], expected_const_point(0), atol=1e-3)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(PoseModelError, match=r"^yolox_l\.onnx: file not found"):
        YoloxDetector(str(tmp_path / "yolox_l.onnx"))
    junk = tmp_path / "dw-ll_ucoco_384.onnx"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(PoseModelError, match=r"^dw-ll_ucoco_384\.onnx: onnxruntime could not open it"):
        WholebodyPose(str(junk))
    assert issubclass(PoseModelError, ValueError)


def test_provider_selection():
    import onnxruntime as ort
    available = ort.get_available_providers()
    chosen = select_providers()
    assert chosen[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in chosen) == ("CUDAExecutionProvider" in available)
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    assert select_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        with pytest.raises(ValueError, match="CUDAExecutionProvider.*not available"):
            select_providers("cuda")


def test_an_unavailable_provider_names_the_nodes_options():
    from pose_align.dwpose import select_providers
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError) as error:
        select_providers("cuda")
    assert str(error.value).endswith("install onnxruntime-gpu for CUDA, or choose provider 'auto' or 'CPU'")
