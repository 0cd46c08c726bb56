"""Pose rendering checked pixel by pixel at known points (spec/pose.md §1.7, §5.4)."""
import colorsys
import os

import cv2
import numpy as np
import pytest

from pose_align import PersonPose, PoseFrame, draw_pose, draw_pose_sequence
from pose_align.draw import stick_width

# spec §1.7, written out: limb colours (RGB) and the hand-edge colours as cv2 draws them
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
HAND_COLORS = [(255, 0, 0), (255, 77, 0), (255, 153, 0), (255, 229, 0), (204, 255, 0), (128, 255, 0), (51, 255, 0),
               (0, 255, 25), (0, 255, 102), (0, 255, 179), (0, 255, 255), (0, 178, 255), (0, 102, 255),
               (0, 25, 255), (51, 0, 255), (128, 0, 255), (204, 0, 255), (255, 0, 230), (255, 0, 153),
               (255, 0, 77)]
SKELETON = np.array([(.28, .20), (.28, .30), (.20, .30), (.20, .42), (.20, .52), (.36, .30), (.36, .42), (.36, .52),
                     (.24, .60), (.24, .78), (.24, .95), (.32, .60), (.32, .78), (.32, .95), (.26, .17), (.30, .17),
                     (.23, .19), (.33, .19)]) / [0.5625, 1]  # height units of a 720 x 1280 canvas, normalised


def dim(color):
    return tuple(int(c * 0.6) for c in color)  # 255 -> 153, 170 -> 102, 85 -> 51


def body_frame(points_px, width, height, visible=None):
    body = np.full((18, 2), np.nan)
    score = np.zeros(18)
    for j, (x, y) in points_px.items():
        body[j] = (x / width, y / height)
        score[j] = 1.0 if visible is None or j in visible else 0.0
    return PoseFrame([PersonPose(body=body, body_score=score)], width, height)


def test_one_limb_pixels():
    frame = body_frame({1: (100, 50), 2: (60, 50)}, 200, 100)
    image = draw_pose(frame)
    assert image.shape == (100, 200, 3) and image.dtype == np.uint8
    assert tuple(image[50, 80]) == (153, 0, 0)        # limb 0 midpoint, dimmed
    assert tuple(image[50, 60]) == (255, 170, 0)      # joint 2 centre, full colour
    assert tuple(image[50, 100]) == (255, 85, 0)      # joint 1 centre
    assert np.flatnonzero(image[:, 80].any(axis=1)).tolist() == list(range(46, 55))  # half-width 4
    painted = np.argwhere(image.any(axis=2))
    assert painted.min(axis=0).tolist() == [46, 56] and painted.max(axis=0).tolist() == [54, 104]  # black elsewhere
    smart = draw_pose(frame, stroke="smart")          # 40 px limb: smart_width 5
    assert np.flatnonzero(smart[:, 80].any(axis=1)).tolist() == list(range(45, 56))


def test_every_limb_and_joint_colour():
    width, height = 720, 1280
    points = {j: (x * width, y * height) for j, (x, y) in enumerate(SKELETON)}
    image = draw_pose(body_frame(points, width, height))
    for limb, (a, b) in enumerate(LIMBS):
        mid = ((points[a][0] + points[b][0]) / 2, (points[a][1] + points[b][1]) / 2)
        assert tuple(image[int(mid[1]), int(mid[0])]) == dim(COLORS[limb]), limb
    for j, (x, y) in points.items():
        assert tuple(image[int(y), int(x)]) == COLORS[j], j


def test_invisible_joints_and_their_limbs_are_not_drawn():
    frame = body_frame({1: (100, 50), 2: (60, 50), 5: (140, 50)}, 200, 100, visible={1, 5})
    image = draw_pose(frame)
    assert not image[40:61, 50:75].any()              # joint 2 and limb 1-2 absent
    assert tuple(image[50, 120]) == dim(COLORS[1])    # limb 1-5 drawn
    assert not draw_pose(frame, body=False).any()


def hand_points(origin, width, height):
    """Wrist at `origin`; finger f along angle 18 + 36 f degrees, joints every 40 px (pixel coordinates)."""
    points = [origin]
    for f in range(5):
        angle = np.radians(-90 + 36 * (f - 2))
        for step in range(1, 5):
            points.append((origin[0] + 40 * step * np.cos(angle), origin[1] + 40 * step * np.sin(angle)))
    return np.array(points) / [width, height]


def test_hand_edges_and_points():
    width, height = 400, 400
    left = hand_points((200, 300), width, height)
    frame = PoseFrame([PersonPose(left_hand=left, left_hand_score=np.ones(21))], width, height)
    image = draw_pose(frame)
    pixels = (left * [width, height]).astype(int)
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
             (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]
    for i, (a, b) in enumerate(edges):
        mid = (pixels[a] + pixels[b]) // 2
        assert tuple(image[mid[1], mid[0]]) == HAND_COLORS[i], i
    for x, y in pixels:
        assert tuple(image[y, x]) == (0, 0, 255)
    musepose = draw_pose(frame, stroke="smart")       # hand points radius 3 instead of 4
    x, y = pixels[0]
    assert tuple(image[y, x + 4]) == (0, 0, 255) and tuple(musepose[y, x + 4]) != (0, 0, 255)


def test_hand_edge_colours_are_what_cv2_draws_from_hsv():
    for i, expected in enumerate(HAND_COLORS):
        canvas = np.zeros((5, 5, 3), np.uint8)
        cv2.line(canvas, (1, 2), (3, 2), np.array(colorsys.hsv_to_rgb(i / 20, 1.0, 1.0)) * 255, thickness=2)
        assert tuple(canvas[2, 2]) == expected, i


def test_points_on_row_or_column_zero_are_dropped():
    width, height = 100, 100
    hand = np.full((21, 2), np.nan)
    hand[0], hand[1] = (0.004, 0.5), (0.5, 0.5)      # int(0.4 px) = 0: point 0 and edge 0-1 are not drawn
    face = np.full((68, 2), np.nan)
    face[0], face[1] = (0.3, 0.0), (0.7, 0.3)
    person = PersonPose(left_hand=hand, left_hand_score=np.r_[1.0, 1.0, np.zeros(19)],
                        face=face, face_score=np.r_[1.0, 1.0, np.zeros(66)])
    image = draw_pose(PoseFrame([person], width, height))
    assert not image[40:61, 0:10].any() and not image[50, 10:45].any()
    assert tuple(image[50, 50]) == (0, 0, 255)
    assert not image[0:5, 25:36].any()                # face point on row 0
    assert tuple(image[30, 70]) == (255, 255, 255) and tuple(image[30, 73]) == (255, 255, 255)  # radius 3
    assert not image[30, 74].any()
    assert not draw_pose(PoseFrame([person], width, height), face=False)[30, 70].any()


def test_musepose_palette_is_the_red_blue_mirror():
    width, height = 720, 1280
    points = {j: (x * width, y * height) for j, (x, y) in enumerate(SKELETON)}
    frame = body_frame(points, width, height)
    frame.people[0].left_hand = hand_points((400, 900), width, height) * 0.5
    frame.people[0].left_hand_score = np.ones(21)
    standard = draw_pose(frame)
    swapped = draw_pose(frame, palette="musepose")
    np.testing.assert_array_equal(swapped, standard[:, :, ::-1])
    mid = ((points[1][0] + points[2][0]) / 2, points[1][1])
    assert tuple(swapped[int(mid[1]), int(mid[0])]) == (0, 0, 153)   # limb 0 comes out blue in MusePose's videos


def test_sizes_scaling_and_errors():
    frame = body_frame({1: (100, 50), 2: (60, 50)}, 200, 100)
    big = draw_pose(frame, 400, 200)                  # normalised coordinates scale with the canvas
    assert tuple(big[100, 160]) == (153, 0, 0) and tuple(big[100, 120]) == (255, 170, 0)
    batch = draw_pose_sequence([frame, PoseFrame([], 200, 100)], 50, 40)
    assert batch.shape == (2, 40, 50, 3) and not batch[1].any()
    assert stick_width(400, 300, True) == 4 and stick_width(1200, 800, True) == 12 and stick_width(9000, 10, True) == 28
    far = body_frame({1: (1e300, 50), 2: (60, 50)}, 200, 100)
    assert tuple(draw_pose(far)[50, 60]) == (255, 170, 0)  # an undrawable point is skipped, not a crash
    with pytest.raises(ValueError, match="unknown palette 'openpose'"):
        draw_pose(frame, palette="openpose")
    with pytest.raises(ValueError, match="unknown stroke"):
        draw_pose(frame, stroke="thick")


def test_standard_palette_matches_musev_pose_video(shared_dir):
    # MuseV's own pose sequence (spec §1.7): the neck to image-left shoulder is 0.6 * (255, 0, 0), the upper arm
    # beyond it 0.6 * (255, 170, 0), the neck to the other shoulder 0.6 * (255, 85, 0): the standard RGB palette
    import av  # tests/requirements.txt

    path = os.path.join(shared_dir, "data", "videos", "video1_girl_poseseq.mp4")
    if not os.path.isfile(path):
        pytest.skip(f"{path} is missing")
    with av.open(path) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)

    def region(color, tolerance=12):
        ys, xs = np.nonzero(np.abs(image - color).max(axis=2) <= tolerance)
        return xs, ys

    neck_r, arm_r, neck_l = region(dim(COLORS[0])), region(dim(COLORS[2])), region(dim(COLORS[1]))
    for xs, ys in (neck_r, arm_r, neck_l):
        assert len(xs) > 200 and (xs.max() - xs.min()) > 4 * (ys.max() - ys.min())  # horizontal limbs
    assert arm_r[0].max() < neck_r[0].min() and neck_r[0].max() < neck_l[0].min()    # left to right on screen
    assert 7 <= neck_r[1].max() - neck_r[1].min() + 1 <= 10                           # stick half-width 4
