"""Pose rendering in the ControlNet / comfyui_controlnet_aux OpenPose style (spec/pose.md §1.7).

MuseV's pose sequences use this standard palette in RGB (its video1_girl_poseseq.mp4 shows the dimmed standard
colours), so it is the default. MusePose draws the same colours but swaps R and B when saving, and sizes strokes
by segment length; both are available as options (`palette="musepose"`, `stroke="smart"`).
"""
from __future__ import annotations

import math

import numpy as np

from .optional import opencv
from .keypoints import PoseFrame

# OpenPose-18 limbs actually drawn (the reference table's last two entries, 2-16 and 5-17, never are)
BODY_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
              (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# limb i and joint j use BODY_COLORS[i] and BODY_COLORS[j], RGB
BODY_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
               (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
               (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_DIMMING = 0.6  # the reference multiplies the canvas by 0.6 after the limbs, before the joints
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
# hsv_to_rgb(i / 20, 1, 1) * 255 as cv2 draws it (its float-to-int rounding), RGB
HAND_EDGE_COLORS = ((255, 0, 0), (255, 77, 0), (255, 153, 0), (255, 229, 0), (204, 255, 0), (128, 255, 0),
                    (51, 255, 0), (0, 255, 25), (0, 255, 102), (0, 255, 179), (0, 255, 255), (0, 178, 255),
                    (0, 102, 255), (0, 25, 255), (51, 0, 255), (128, 0, 255), (204, 0, 255), (255, 0, 230),
                    (255, 0, 153), (255, 0, 77))
HAND_POINT_COLOR = (0, 0, 255)
FACE_POINT_COLOR = (255, 255, 255)
EPS = 0.01  # hand and face points are drawn only if int(pixel) > EPS on both axes (so row/column 0 is dropped)
PALETTES = ("controlnet", "musepose")
STROKES = ("fixed", "smart")
_MAX_PIXEL = 1 << 20  # points further out than this cannot be drawn (cv2 takes int32 and would overflow)


def smart_width(d: float) -> int:
    """MusePose's stroke width for a segment of length d pixels: 1 below 5 px, doubling thresholds up to 8."""
    for width, limit in enumerate((5, 10, 20, 40, 80, 160, 320), start=1):
        if d < limit:
            return width
    return 8


def stick_width(width: int, height: int, xinsr_stick_scaling: bool = False, base: int = 4) -> int:
    """Limb half-width: 4, or comfyui_controlnet_aux's xinsr scaling (x min(2 + max(W, H) // 1000, 7) from 500 px)."""
    if not xinsr_stick_scaling:
        return base
    side = max(width, height)
    return base * (1 if side < 500 else min(2 + side // 1000, 7))


def _pixel(point, width: int, height: int):
    x, y = float(point[0]) * width, float(point[1]) * height
    if not (math.isfinite(x) and math.isfinite(y)) or abs(x) > _MAX_PIXEL or abs(y) > _MAX_PIXEL:
        return None
    return x, y


def _draw_bodies(canvas, frame, width, height, stroke, stick):
    # the body is drawn first, on a black canvas: limbs overwrite one another, then the whole canvas is dimmed
    # (the reference's order; comfyui_controlnet_aux's dimming of each colour gives the same pixels here)
    cv2 = opencv()
    people = [(person.body, person.visible("body")) for person in frame.people]
    for limb, (a, b) in enumerate(BODY_LIMBS):
        for body, visible in people:
            if not (visible[a] and visible[b]):
                continue
            pa, pb = _pixel(body[a], width, height), _pixel(body[b], width, height)
            if pa is None or pb is None:
                continue
            length = ((pa[0] - pb[0]) ** 2 + (pa[1] - pb[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(pa[1] - pb[1], pa[0] - pb[0]))
            minor = smart_width(length) if stroke == "smart" else stick
            polygon = cv2.ellipse2Poly((int((pa[0] + pb[0]) / 2), int((pa[1] + pb[1]) / 2)),
                                       (int(length / 2), minor), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, BODY_COLORS[limb])
    canvas[:] = (canvas * LIMB_DIMMING).astype(np.uint8)
    for joint in range(18):
        for body, visible in people:
            if not visible[joint]:
                continue
            p = _pixel(body[joint], width, height)
            if p is not None:
                cv2.circle(canvas, (int(p[0]), int(p[1])), 4, BODY_COLORS[joint], thickness=-1)


def _draw_hand(canvas, points, visible, width, height, stroke):
    cv2 = opencv()
    pixels = [(_pixel(p, width, height) if shown else None) for p, shown in zip(points, visible)]
    pixels = [None if p is None else (int(p[0]), int(p[1])) for p in pixels]
    for edge, (a, b) in enumerate(HAND_EDGES):
        pa, pb = pixels[a], pixels[b]
        if pa is None or pb is None or min(pa[0], pa[1], pb[0], pb[1]) <= EPS:
            continue
        thickness = smart_width(((pa[0] - pb[0]) ** 2 + (pa[1] - pb[1]) ** 2) ** 0.5) if stroke == "smart" else 2
        cv2.line(canvas, pa, pb, HAND_EDGE_COLORS[edge], thickness=thickness)
    radius = 3 if stroke == "smart" else 4
    for p in pixels:
        if p is not None and p[0] > EPS and p[1] > EPS:
            cv2.circle(canvas, p, radius, HAND_POINT_COLOR, thickness=-1)


def draw_pose(frame: PoseFrame, width: int | None = None, height: int | None = None, *, body: bool = True,
              hands: bool = True, face: bool = True, palette: str = "controlnet", stroke: str = "fixed",
              xinsr_stick_scaling: bool = False) -> np.ndarray:
    """Render a frame's poses on a black canvas.

    Order as in the reference: the bodies of all people (limbs, dimmed x0.6, then joints of radius 4), then all
    hands (20 edges of 2 px in HAND_EDGE_COLORS, points of radius 4 in (0, 0, 255)), then all faces (points of
    radius 3, white). Only visible points are drawn; hand and face points also need int(pixel) > 0.01 on both
    axes, like the reference. Limbs are filled ellipses with half-width 4 along the segment.

    Args:
        frame: normalised poses.
        width, height: canvas size in pixels (default: the frame's canvas).
        body, hands, face: parts to draw.
        palette: "controlnet" (standard RGB, for MuseV / ControlNet openpose) or "musepose" (R and B swapped,
            as MusePose's saved pose videos are).
        stroke: "fixed" (limb half-width 4, hand lines 2 px, hand points radius 4) or "smart" (MusePose:
            smart_width of the segment length for limbs and hand lines, hand points radius 3).
        xinsr_stick_scaling: comfyui_controlnet_aux's thicker limbs on large canvases (stroke "fixed" only).
    Returns:
        `(height, width, 3)` uint8 RGB.
    Raises:
        ValueError: unknown palette or stroke, or a canvas size below 1.
    """
    cv2 = opencv()
    if palette not in PALETTES:
        raise ValueError(f"unknown palette '{palette}', expected one of {PALETTES}")
    if stroke not in STROKES:
        raise ValueError(f"unknown stroke '{stroke}', expected one of {STROKES}")
    width = int(frame.width if width is None else width)
    height = int(frame.height if height is None else height)
    if width < 1 or height < 1:
        raise ValueError(f"canvas size must be at least 1 x 1, got {width} x {height}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    if body:
        _draw_bodies(canvas, frame, width, height, stroke, stick_width(width, height, xinsr_stick_scaling))
    if hands:
        for person in frame.people:
            for part in ("left_hand", "right_hand"):
                _draw_hand(canvas, getattr(person, part), person.visible(part), width, height, stroke)
    if face:
        for person in frame.people:
            for point, shown in zip(person.face, person.visible("face")):
                p = _pixel(point, width, height) if shown else None
                if p is not None and int(p[0]) > EPS and int(p[1]) > EPS:
                    cv2.circle(canvas, (int(p[0]), int(p[1])), 3, FACE_POINT_COLOR, thickness=-1)
    if palette == "musepose":
        canvas = np.ascontiguousarray(canvas[:, :, ::-1])
    return canvas


def draw_pose_sequence(frames: list[PoseFrame], width: int | None = None, height: int | None = None,
                       **kwargs) -> np.ndarray:
    """`(N, height, width, 3)` uint8 renders of `frames` (keyword arguments as in `draw_pose`); with no size
    given, the first frame's canvas is used for all."""
    if not frames:
        raise ValueError("no frames to draw")
    width = frames[0].width if width is None else width
    height = frames[0].height if height is None else height
    return np.stack([draw_pose(frame, width, height, **kwargs) for frame in frames])
