"""MusePose pose alignment, golden test from hand-written keypoints (spec/pose.md §3, §5.3).

Video frame 0 is written in height units for a 720x1280 video. The reference is that frame put through §3.5 with
known segment scales, translated so the neck sits at (.30, .25) and expressed for a 704x1216 reference. Aligning
the video to it must recover the scales and land frame 0 on the reference.
"""
import json

import numpy as np
import pytest

from pose_align import (NoPersonError, PersonPose, PoseFrame, align_pose_sequence, aligned_output_size,
                        to_pose_keypoint)

VIDEO_W, VIDEO_H = 720, 1280
VIDEO_ASPECT = VIDEO_W / VIDEO_H      # 0.5625
REF_W, REF_H = 704, 1216
REF_ASPECT = REF_W / REF_H            # 0.578947
FRAME0 = np.array([(.28, .20), (.28, .30), (.20, .30), (.20, .42), (.20, .52), (.36, .30), (.36, .42), (.36, .52),
                   (.24, .60), (.24, .78), (.24, .95), (.32, .60), (.32, .78), (.32, .95), (.26, .18), (.30, .18),
                   (.24, .19), (.32, .19)])
SCALES = {"neck": 1.2, "face": 1.5, "shoulder": 1.25, "arm_upper": 1.5, "arm_lower": 0.8, "body_len": 1.1,
          "leg_upper": 0.9, "leg_lower": 1.2, "hand": (1.5 + 0.8) / 2}
REF_NECK = np.array([.30, .25])
OFFSET = REF_NECK - FRAME0[1]         # (.02, -.05)
# compat keeps MusePose's cv2.getRotationMatrix2D, whose centre is a float32 Point2f: its points carry ~1e-8
# rounding (the same as MusePose's own output on the same OpenCV); robust is exact to double precision
TOL = {"robust": 1e-12, "compat": 1e-7}


def close(actual, expected, atol=1e-12):
    """Absolute comparison only (assert_allclose's default rtol=1e-7 would hide small errors)."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


def hand_at(wrist):
    """21 hand points (height units): point 0 = wrist + (0, .01); point j = point 0 + (dx, dy) by finger."""
    base = np.asarray(wrist) + [0, .01]
    points = [base]
    for j in range(1, 21):
        points.append(base + [(-.02, -.01, 0, .01, .02)[(j - 1) // 4], .01 * ((j - 1) % 4 + 1)])
    return np.array(points)


def chain(body, left, right, s):
    """§3.5 written out from the spec (independent of pose_align): radial about the neck, then segment by segment."""
    o, p = body, body.copy()
    p[0] = o[1] + s["neck"] * (o[0] - o[1])
    p[14:18] = p[0] + s["face"] * (o[14:18] - o[0])
    p[2] = o[1] + s["shoulder"] * (o[2] - o[1])
    p[5] = o[1] + s["shoulder"] * (o[5] - o[1])
    p[3] = p[2] + s["arm_upper"] * (o[3] - o[2])
    p[4] = p[3] + s["arm_lower"] * (o[4] - o[3])
    p[6] = p[5] + s["arm_upper"] * (o[6] - o[5])
    p[7] = p[6] + s["arm_lower"] * (o[7] - o[6])
    p[8] = o[1] + s["body_len"] * (o[8] - o[1])
    p[11] = o[1] + s["body_len"] * (o[11] - o[1])
    p[9] = p[8] + s["leg_upper"] * (o[9] - o[8])
    p[10] = p[9] + s["leg_lower"] * (o[10] - o[9])
    p[12] = p[11] + s["leg_upper"] * (o[12] - o[11])
    p[13] = p[12] + s["leg_lower"] * (o[13] - o[12])
    return p, p[7] + s["hand"] * (left - o[7]), p[4] + s["hand"] * (right - o[4])


def person(body_units, aspect, left_units=None, right_units=None, hidden=()):
    """PersonPose from height-unit points (x / aspect), all visible except the OpenPose indices in `hidden`."""
    def norm(points):
        points = np.array(points, float)
        points[:, 0] /= aspect
        return points
    body_score = np.ones(18)
    body_score[list(hidden)] = 0.0
    kwargs = {"body": norm(body_units), "body_score": body_score}
    if left_units is not None:
        kwargs.update(left_hand=norm(left_units), left_hand_score=np.ones(21))
    if right_units is not None:
        kwargs.update(right_hand=norm(right_units), right_hand_score=np.ones(21))
    return PersonPose(**kwargs)


def video_frame(body=FRAME0, left=None, right=None, hidden=()):
    left = hand_at(body[7]) if left is None else left
    right = hand_at(body[4]) if right is None else right
    return PoseFrame([person(body, VIDEO_ASPECT, left, right, hidden)], VIDEO_W, VIDEO_H)


def reference_units():
    body, left, right = chain(FRAME0, hand_at(FRAME0[7]), hand_at(FRAME0[4]), SCALES)
    shift = REF_NECK - body[1]
    return body + shift, left + shift, right + shift


def reference_frame(hidden=()):
    body, left, right = reference_units()
    return PoseFrame([person(body, REF_ASPECT, left, right, hidden)], REF_W, REF_H)


def frame1_units():
    """Frame 1: the right wrist moves to elbow + (.10, 0), the right hand follows rigidly."""
    body = FRAME0.copy()
    body[4] = FRAME0[3] + [.10, 0]
    return body, hand_at(FRAME0[7]), hand_at(FRAME0[4]) + (body[4] - FRAME0[4])


def golden_video():
    body1, left1, right1 = frame1_units()
    return [video_frame(), video_frame(body1, left1, right1)]


@pytest.mark.parametrize("mode", ["robust", "compat"])
def test_golden_scales_and_align_frame(mode):
    aligned, report = align_pose_sequence(reference_frame(), golden_video(), mode=mode)
    # (a) the nine scales are recovered
    assert set(report.scales) == set(SCALES)
    for name, value in SCALES.items():
        assert report.scales[name] == pytest.approx(value, abs=1e-12), name
    assert report.offset == pytest.approx(tuple(OFFSET), abs=1e-12)
    assert report.scale_fallbacks == () and report.scale_frame == 0
    # (b) frame 0 lands on the reference, in normalised reference coordinates
    assert len(aligned) == 2 and (aligned[0].width, aligned[0].height) == (REF_W, REF_H)
    got = aligned[0].people[0]
    ref = reference_frame().people[0]
    close(got.body, ref.body, atol=TOL[mode])
    close(got.left_hand, ref.left_hand, atol=TOL[mode])
    close(got.right_hand, ref.right_hand, atol=TOL[mode])
    expected = {0: (0.518182, 0.13), 1: (0.518182, 0.25), 2: (0.345455, 0.25), 3: (0.345455, 0.43),
                4: (0.345455, 0.51), 8: (0.442182, 0.58), 10: (0.442182, 0.946), 17: (0.621818, 0.115)}
    for index, point in expected.items():
        close(got.body[index], point, atol=1e-6)


@pytest.mark.parametrize("mode", ["robust", "compat"])
def test_golden_moved_wrist(mode):
    # (c) shoulder .28 - 1.25 * .08 = .18; elbow y = .30 + 1.5 * .12 = .48; wrist (.18 + .8 * .10, .48) = (.26, .48)
    aligned, _ = align_pose_sequence(reference_frame(), golden_video(), mode=mode)
    got = aligned[1].people[0]
    close(got.body[4], [0.26 + 0.02, 0.48 - 0.05] / np.array([REF_ASPECT, 1]), atol=TOL[mode])
    close(got.body[4], [0.483636, 0.43], atol=1e-6)
    # the hand keeps its shape, scaled by the hand scale about the new wrist
    _, _, right = frame1_units()
    body1 = frame1_units()[0]
    expected = (np.array([.26, .48]) + SCALES["hand"] * (right - body1[4]) + OFFSET) / [REF_ASPECT, 1]
    close(got.right_hand, expected, atol=TOL[mode])


def test_compat_equals_robust_when_everything_is_visible():
    # (d) without missing points or faces the two modes do the same arithmetic (up to compat's float32 centres)
    robust, _ = align_pose_sequence(reference_frame(), golden_video(), mode="robust")
    compat, _ = align_pose_sequence(reference_frame(), golden_video(), mode="compat")
    for a, b in zip(robust, compat):
        for part in ("body", "left_hand", "right_hand"):
            close(getattr(a.people[0], part), getattr(b.people[0], part), atol=TOL["compat"])


def test_robust_face_scale_falls_back_to_the_mean():
    # (e) reference L ear blanked: the face scale cannot be measured
    _, report = align_pose_sequence(reference_frame(hidden=(17,)), golden_video(), mode="robust")
    others = [v for k, v in SCALES.items() if k != "face"]
    assert report.scale_fallbacks == ("face",)
    assert report.scales["face"] == pytest.approx(sum(others) / 8, abs=1e-12)   # 1.1375
    assert all(np.isfinite(v) for v in report.scales.values())


def test_zero_length_video_segment():
    # both video ears visible on the same spot: robust skips the term, compat divides by zero
    body = FRAME0.copy()
    body[17] = body[16]
    frames = [video_frame(body)]
    _, report = align_pose_sequence(reference_frame(), frames, mode="robust")
    assert report.scale_fallbacks == ("face",) and report.scales["face"] == pytest.approx(1.1375, abs=1e-12)
    _, report = align_pose_sequence(reference_frame(), frames, mode="compat")
    assert report.scales["face"] == float("inf") and report.scale_fallbacks == ()


def test_robust_missing_elbow_moves_wrist_with_shoulder():
    # (e) a video elbow blanked (frame 1, so the scales still come from frame 0)
    frames = [video_frame(), video_frame(hidden=(3,))]
    aligned, report = align_pose_sequence(reference_frame(), frames, mode="robust")
    got = aligned[1].people[0]
    shoulder_shift = (SCALES["shoulder"] - 1) * (FRAME0[2] - FRAME0[1])      # (-.02, 0)
    wrist = FRAME0[4] + shoulder_shift
    close(got.body[4], (wrist + OFFSET) / [REF_ASPECT, 1], atol=1e-12)
    assert not got.visible("body")[3] and np.isnan(got.body[3]).all()
    hand = wrist + SCALES["hand"] * (hand_at(FRAME0[4]) - FRAME0[4])
    close(got.right_hand, (hand + OFFSET) / [REF_ASPECT, 1], atol=1e-12)
    # the other side is untouched by the missing elbow
    close(got.body[7], aligned[0].people[0].body[7], atol=1e-12)
    assert report.frames[1].missing_body == (3,) and report.missing_keypoint_frames == [1]


def test_compat_missing_elbow_reproduces_musepose_placeholder_bug():
    # MusePose feeds the -1 placeholder of a missing elbow into the chain: the wrist is off by
    # (arm_upper - arm_lower) * (placeholder - true elbow), in height units
    frames = [video_frame(), video_frame(hidden=(3,))]
    aligned, _ = align_pose_sequence(reference_frame(), frames, mode="compat")
    got, clean = aligned[1].people[0], aligned[0].people[0]
    placeholder = np.array([-1 * VIDEO_ASPECT, -1.0])
    error = (SCALES["arm_upper"] - SCALES["arm_lower"]) * (placeholder - FRAME0[3])
    close(got.body[4], clean.body[4] + error / [REF_ASPECT, 1], atol=TOL["compat"])
    # the missing point itself is restored to -1, then shifted: (-1 + offset) in reference coordinates
    close(got.body[3], (np.array([-1, -1]) + OFFSET) / [REF_ASPECT, 1], atol=1e-12)
    assert not got.visible("body")[3]


def test_compat_infinite_face_scale_and_robust_fix():
    # align frame without ears: MusePose measures |R16 - R17| / |(-1,-1) - (-1,-1)| = inf; the eyes it moves
    # become NaN, then -1, then -1 + offset
    frames = [video_frame(hidden=(16, 17))]
    aligned, report = align_pose_sequence(reference_frame(), frames, mode="compat")
    assert report.scales["face"] == float("inf")
    got = aligned[0].people[0]
    for eye in (14, 15):
        close(got.body[eye], (np.array([-1, -1]) + OFFSET) / [REF_ASPECT, 1], atol=1e-12)
    aligned, report = align_pose_sequence(reference_frame(), frames, mode="robust")
    assert report.scale_fallbacks == ("face",) and np.isfinite(report.scales["face"])
    eyes = aligned[0].people[0].body[[14, 15]]
    assert np.isfinite(eyes).all() and (np.abs(eyes - reference_frame().people[0].body[[14, 15]]) < 0.05).all()


def test_compat_second_person_left_hand_quirk():
    # with two people DWPose's hands array is [p0 left, p1 left, p0 right, p1 right]; MusePose takes hands[1]
    # as the right hand, which is person 1's left hand
    main = video_frame().people[0]
    other = person(FRAME0 + [.3, 0], VIDEO_ASPECT, hand_at(FRAME0[7]) + [.3, .1], hand_at(FRAME0[4]) + [.3, 0])
    two = [PoseFrame([main, other], VIDEO_W, VIDEO_H)]
    compat, _ = align_pose_sequence(reference_frame(), two, mode="compat")
    robust, _ = align_pose_sequence(reference_frame(), two, mode="robust")
    ref = reference_frame().people[0]
    close(robust[0].people[0].right_hand, ref.right_hand, atol=1e-12)
    wrong = (other.left_hand * [VIDEO_ASPECT, 1] - FRAME0[4]) * SCALES["hand"] + reference_units()[0][4]
    close(compat[0].people[0].right_hand, wrong / [REF_ASPECT, 1], atol=TOL["compat"])


def test_align_frame_and_max_frame():
    body1, left1, right1 = frame1_units()
    frames = [video_frame(body1, left1, right1), video_frame(), video_frame(body1, left1, right1), video_frame(),
              video_frame(), video_frame()]
    aligned, report = align_pose_sequence(reference_frame(), frames, align_frame=1, max_frame=4)
    assert len(aligned) == 3 and [f.frame for f in report.frames] == [1, 2, 3]
    assert report.scales["arm_lower"] == pytest.approx(0.8, abs=1e-12)       # measured on frame 1 (= frame 0)
    close(aligned[0].people[0].body, reference_frame().people[0].body, atol=1e-12)
    close(aligned[1].people[0].body[4], [0.483636, 0.43], atol=1e-6)
    assert len(align_pose_sequence(reference_frame(), frames, max_frame=0)[0]) == 6
    assert len(align_pose_sequence(reference_frame(), frames, max_frame=100)[0]) == 6
    with pytest.raises(ValueError, match="align_frame 4 is outside the 4 video frame"):
        align_pose_sequence(reference_frame(), frames, align_frame=4, max_frame=4)


@pytest.mark.parametrize("mode", ["robust", "compat"])
def test_missing_person_frames_are_reported(mode):
    empty = PoseFrame([], VIDEO_W, VIDEO_H)
    ghost = PoseFrame([PersonPose()], VIDEO_W, VIDEO_H)  # detected, but no visible point
    frames = [video_frame(), empty, ghost, video_frame(hidden=(16, 17)), video_frame(left=np.full((21, 2), np.nan))]
    frames[4].people[0].left_hand_score[:] = 0
    aligned, report = align_pose_sequence(reference_frame(), frames, mode=mode)
    assert len(aligned) == 5
    assert aligned[1].people == [] and aligned[2].people == []
    assert report.missing_person_frames == [1, 2]
    assert report.missing_keypoint_frames == [3, 4]
    assert report.frames[3].missing_body == (16, 17) and report.frames[4].missing_hands == ("left",)
    assert [f.people for f in report.frames] == [1, 0, 1, 1, 1]
    summary = report.summary()
    assert "no person in 2 frame(s): 1, 2" in summary and "missing keypoints in 2 frame(s): 3, 4" in summary


def test_align_frame_without_person():
    frames = [PoseFrame([], VIDEO_W, VIDEO_H), video_frame()]
    aligned, report = align_pose_sequence(reference_frame(), frames, mode="robust")
    assert report.scale_frame == 1 and report.missing_person_frames == [0]
    assert "align frame 0 had no person with a visible neck; used frame 1" in report.summary()
    close(aligned[1].people[0].body, reference_frame().people[0].body, atol=1e-12)
    with pytest.raises(NoPersonError, match="align frame 0 has no person with a visible neck.*frame 1 does"):
        align_pose_sequence(reference_frame(), frames, mode="compat")


def test_no_person_errors():
    nobody = [PoseFrame([], VIDEO_W, VIDEO_H)] * 3
    with pytest.raises(NoPersonError, match=r"^no person found in the video pose: none of frames 0\.\.2"):
        align_pose_sequence(reference_frame(), nobody)
    with pytest.raises(NoPersonError, match="^no person found in the reference pose: no person was found"):
        align_pose_sequence(PoseFrame([], REF_W, REF_H), golden_video())
    with pytest.raises(NoPersonError, match="person 0 has no visible neck"):
        align_pose_sequence(reference_frame(hidden=(1,)), golden_video())
    no_neck = [video_frame(hidden=(1,))] * 2
    with pytest.raises(NoPersonError, match="no person with a visible neck"):
        align_pose_sequence(reference_frame(), no_neck)
    assert issubclass(NoPersonError, ValueError)
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        align_pose_sequence(reference_frame(), golden_video(), mode="fast")


def test_robust_neckless_frame_keeps_translation():
    # a later frame without neck: neck children move with the neck's (zero) displacement, the rest follows
    frames = [video_frame(), video_frame(hidden=(1,))]
    aligned, report = align_pose_sequence(reference_frame(), frames)
    got = aligned[1].people[0]
    close(got.body[2], (FRAME0[2] + OFFSET) / [REF_ASPECT, 1], atol=1e-12)
    elbow = FRAME0[2] + SCALES["arm_upper"] * (FRAME0[3] - FRAME0[2])
    close(got.body[3], (elbow + OFFSET) / [REF_ASPECT, 1], atol=1e-12)
    assert report.frames[1].missing_body == (1,)


def pixels_dict(body_units, aspect, width, height, left=None, right=None):
    """A frame dict in comfyui_controlnet_aux's POSE_KEYPOINT format, written here without pose_align."""
    def flat(points):
        return [v for x, y in points for v in (round(x / aspect * width, 4), round(y * height, 4), 1.0)]
    return {"people": [{"pose_keypoints_2d": flat(body_units), "face_keypoints_2d": None,
                        "hand_left_keypoints_2d": None if left is None else flat(left),
                        "hand_right_keypoints_2d": None if right is None else flat(right)}],
            "canvas_width": width, "canvas_height": height}


def test_pose_keypoint_dicts_drive_the_alignment():
    ref_body, ref_left, ref_right = reference_units()
    ref = [pixels_dict(ref_body, REF_ASPECT, REF_W, REF_H, ref_left, ref_right)]
    body1, left1, right1 = frame1_units()
    video = [pixels_dict(FRAME0, VIDEO_ASPECT, VIDEO_W, VIDEO_H, hand_at(FRAME0[7]), hand_at(FRAME0[4])),
             pixels_dict(body1, VIDEO_ASPECT, VIDEO_W, VIDEO_H, left1, right1)]
    video[1]["people"][0]["pose_keypoints_2d"][3 * 3:3 * 3 + 3] = [0.0, 0.0, 0.0]  # R elbow missing
    aligned, report = align_pose_sequence(json.dumps(ref), json.dumps(video))
    for name, value in SCALES.items():
        assert report.scales[name] == pytest.approx(value, abs=1e-5), name   # pixels rounded to 1e-4
    close(aligned[0].people[0].body, reference_frame().people[0].body, atol=1e-5)
    assert report.frames[1].missing_body == (3,)
    out = to_pose_keypoint(aligned[0], canvas_size=aligned_output_size(REF_W, REF_H, 768))
    assert (out["canvas_width"], out["canvas_height"]) == (444, 768)
    body = np.array(out["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    close(body[1], [0.518182 * 444, 0.25 * 768, 1.0], atol=1e-3)
    assert out["people"][0]["face_keypoints_2d"] is None


def test_aligned_output_size():
    assert aligned_output_size(704, 1216, 768) == (444, 768)     # MusePose's W1 = int(768 / 1216 * 704 // 2 * 2)
    assert aligned_output_size(1080, 1920, 768) == (432, 768)
    assert aligned_output_size(1000, 1000, 700) == (700, 700)
