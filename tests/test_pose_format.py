"""POSE_KEYPOINT (comfyui_controlnet_aux's format) writer and reader (spec/pose.md §2)."""
import json

import numpy as np
import pytest

from pose_align import (PersonPose, PoseFrame, align_pose_sequence, as_pose_frames, from_pose_keypoint,
                        to_pose_keypoint, to_pose_keypoint_list)

# As comfyui_controlnet_aux's DWPose node writes it (shortened by hand: one person, pixel coordinates, c = 1.0,
# missing points 0,0,0, empty parts null).
CONTROLNET_AUX_FRAME = """{"people": [{"pose_keypoints_2d": [
  412.0, 233.5, 1.0,  415.2, 310.0, 1.0,  350.0, 312.0, 1.0,  330.0, 420.0, 1.0,  325.0, 520.0, 1.0,
  480.4, 308.0, 1.0,  500.0, 415.0, 1.0,  510.0, 515.0, 1.0,  370.0, 600.0, 1.0,  368.0, 780.0, 1.0,
  366.0, 950.0, 1.0,  455.0, 598.0, 1.0,  458.0, 778.0, 1.0,  460.0, 948.0, 1.0,  400.0, 220.0, 1.0,
  425.0, 221.0, 1.0,  0.0, 0.0, 0.0,  440.0, 230.0, 1.0],
  "face_keypoints_2d": null,
  "hand_left_keypoints_2d": null,
  "hand_right_keypoints_2d": null}],
  "canvas_width": 1080, "canvas_height": 1920}"""


def close(actual, expected, atol=1e-12):
    """Absolute comparison only (assert_allclose's default rtol=1e-7 would hide small errors)."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


def sample_frame():
    rng = np.random.default_rng(3)
    people = []
    for n in range(2):
        p = PersonPose(body=rng.uniform(0.05, 0.95, (18, 2)), body_score=rng.uniform(0.0, 1.0, 18),
                       face=rng.uniform(0.05, 0.95, (68, 2)), face_score=np.full(68, 0.9),
                       left_hand=rng.uniform(0.05, 0.95, (21, 2)), left_hand_score=rng.uniform(0.0, 1.0, 21),
                       right_hand=rng.uniform(0.05, 0.95, (21, 2)), right_hand_score=np.zeros(21))
        people.append(p)
    people[1].face_score[:] = 0.1
    return PoseFrame(people, 1080, 1920)


def test_written_format_matches_controlnet_aux():
    frame = sample_frame()
    data = to_pose_keypoint(frame)
    assert set(data) == {"people", "canvas_width", "canvas_height"}
    assert (data["canvas_width"], data["canvas_height"]) == (1080, 1920)
    person, source = data["people"][0], frame.people[0]
    assert set(person) == {"pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d",
                           "hand_right_keypoints_2d"}
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    for j in range(18):
        if source.body_score[j] >= 0.3:
            close(body[j], [source.body[j, 0] * 1080, source.body[j, 1] * 1920, 1.0])
        else:
            assert body[j].tolist() == [0.0, 0.0, 0.0]
    face = np.array(person["face_keypoints_2d"]).reshape(70, 3)
    close(face[:68, :2], source.face * [1080, 1920])
    close(face[68:], body[[14, 15]])              # the OpenPose pupils: body OP14, OP15
    assert person["hand_right_keypoints_2d"] is None                  # no visible point
    assert len(person["hand_left_keypoints_2d"]) == 63
    assert data["people"][1]["face_keypoints_2d"] is None
    json.dumps(data)  # plain JSON types only


def test_disabled_parts():
    data = to_pose_keypoint(sample_frame(), body=False, hands=False, face=False)
    person = data["people"][0]
    assert person["pose_keypoints_2d"] == [0.0] * 54                 # a disabled body is 54 zeros
    assert person["face_keypoints_2d"] is None and person["hand_left_keypoints_2d"] is None


def test_round_trip():
    frame = sample_frame()
    back = from_pose_keypoint(to_pose_keypoint_list([frame, frame]))
    assert len(back) == 2 and (back[0].width, back[0].height) == (1080, 1920)
    for a, b in zip(frame.people, back[0].people):
        for part in ("body", "face", "left_hand", "right_hand"):
            shown = a.visible(part)
            assert (b.visible(part) == shown).all(), part
            close(getattr(b, part)[shown], getattr(a, part)[shown], atol=1e-12)
            assert (getattr(b, part + "_score")[shown] == 1.0).all()  # the format keeps visibility only
            assert np.isnan(getattr(b, part)[~shown]).all()


def test_controlnet_aux_frame_is_read():
    (frame,) = from_pose_keypoint(CONTROLNET_AUX_FRAME)
    assert (frame.width, frame.height) == (1080, 1920) and len(frame.people) == 1
    person = frame.people[0]
    close(person.body[0], [412.0 / 1080, 233.5 / 1920])
    assert np.flatnonzero(~person.visible("body")).tolist() == [16]
    assert not person.visible("face").any() and not person.visible("left_hand").any()


def test_normalised_and_pixel_inputs_read_the_same():
    pixels = json.loads(CONTROLNET_AUX_FRAME)
    normalised = json.loads(CONTROLNET_AUX_FRAME)
    values = normalised["people"][0]["pose_keypoints_2d"]
    for i in range(0, 54, 3):
        values[i] /= 1080
        values[i + 1] /= 1920
    a, b = as_pose_frames([pixels, normalised])
    close(a.people[0].body[a.people[0].visible("body")],
                               b.people[0].body[b.people[0].visible("body")], atol=1e-12)


def test_face_of_68_points_and_nested_triplets():
    data = json.loads(CONTROLNET_AUX_FRAME)
    data["people"][0]["face_keypoints_2d"] = [500.0, 300.0, 1.0] * 68
    data["people"][0]["hand_left_keypoints_2d"] = [[600.0, 700.0, 1.0]] * 21
    (frame,) = from_pose_keypoint(data)
    assert frame.people[0].visible("face").all() and frame.people[0].visible("left_hand").all()
    close(frame.people[0].left_hand[3], [600 / 1080, 700 / 1920])


def test_malformed_values_are_refused_with_the_place_named():
    data = json.loads(CONTROLNET_AUX_FRAME)
    data["people"][0]["pose_keypoints_2d"] = [1.0] * 75  # BODY_25
    with pytest.raises(ValueError, match=r"POSE_KEYPOINT frame 0, person 0: 'pose_keypoints_2d' has 75 numbers; "
                                         r"expected 54"):
        from_pose_keypoint([data])
    with pytest.raises(ValueError, match="POSE_KEYPOINT frame 1: 'canvas_width' and 'canvas_height' must be"):
        from_pose_keypoint([json.loads(CONTROLNET_AUX_FRAME), {"people": []}])
    with pytest.raises(ValueError, match="expected a list of frame dicts, got int"):
        from_pose_keypoint(3)


def test_unwritable_points_become_missing():
    frame = sample_frame()
    frame.people[0].body[0] = [np.inf, 0.5]
    frame.people[0].body_score[0] = 1.0
    assert to_pose_keypoint(frame)["people"][0]["pose_keypoints_2d"][:3] == [0.0, 0.0, 0.0]


def test_canvas_size_override_rescales():
    frame = sample_frame()
    data = to_pose_keypoint(frame, canvas_size=(540, 960))
    body = np.array(data["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    j = int(np.flatnonzero(frame.people[0].visible("body"))[0])
    close(body[j, :2], frame.people[0].body[j] * [540, 960])


def test_controlnet_aux_frames_drive_the_alignment():
    # a reference and a two-frame video in comfyui_controlnet_aux's format, frame 1 without any person
    ref = json.loads(CONTROLNET_AUX_FRAME)
    video = [json.loads(CONTROLNET_AUX_FRAME), {"people": [], "canvas_width": 1080, "canvas_height": 1920}]
    aligned, report = align_pose_sequence([ref], video)
    assert report.missing_person_frames == [1] and aligned[1].people == []
    assert report.scale_fallbacks == ("face",)  # R ear missing: ear-to-ear cannot be measured
    for name in ("neck", "shoulder", "arm_upper", "arm_lower", "body_len", "leg_upper", "leg_lower"):
        assert report.scales[name] == pytest.approx(1.0, abs=1e-12), name
    ref_frame = from_pose_keypoint(ref)[0]
    shown = ref_frame.people[0].visible("body")
    close(aligned[0].people[0].body[shown], ref_frame.people[0].body[shown], atol=1e-12)
