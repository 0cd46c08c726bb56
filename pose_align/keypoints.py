"""Pose data in memory and the POSE_KEYPOINT interchange format (spec/pose.md §1.5, §1.6, §2).

In memory a frame is a `PoseFrame`: the canvas size plus one `PersonPose` per person, in detection order
(person 0 is the highest-scoring detection). Coordinates are normalised, x / canvas_width and y / canvas_height,
float64. Every keypoint has a score; a point is visible when its score is >= VISIBLE_SCORE (0.3) and its
coordinates are finite. The coordinates of a point that is not visible carry no meaning (NaN when unknown, the
raw model guess when the detector produced one), so code must test visibility, never a placeholder value.

POSE_KEYPOINT is comfyui_controlnet_aux's type: a list with one dict per frame,
`{"people": [{"pose_keypoints_2d": [x, y, c] * 18, "face_keypoints_2d": [x, y, c] * 70 or None,
"hand_left_keypoints_2d": [x, y, c] * 21 or None, "hand_right_keypoints_2d": [x, y, c] * 21 or None}, ...],
"canvas_width": W, "canvas_height": H}`, flat lists, x and y in canvas pixels, c = 1.0 for a visible point and
[0, 0, 0] for a missing one (its encode_poses_as_dict / Wholebody.format_result).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

VISIBLE_SCORE = 0.3  # DWPose / comfyui_controlnet_aux visibility threshold

# OpenPose-18 body order; "left"/"right" are the subject's own sides.
OPENPOSE_BODY = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
                 "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
                 "right_eye", "left_eye", "right_ear", "left_ear")
# COCO-17 index feeding each OpenPose index (None: the neck, synthesised from the shoulders).
OPENPOSE_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)

PARTS = ("body", "face", "left_hand", "right_hand")
PART_SIZES = {"body": 18, "face": 68, "left_hand": 21, "right_hand": 21}
POSE_KEYPOINT_KEYS = {"body": "pose_keypoints_2d", "face": "face_keypoints_2d",
                      "left_hand": "hand_left_keypoints_2d", "right_hand": "hand_right_keypoints_2d"}


def _points(n: int) -> np.ndarray:
    return np.full((n, 2), np.nan)


@dataclass
class PersonPose:
    """One person: OpenPose-18 body, 68 iBUG face points, 21-point left and right hands.

    Each part is `(K, 2)` float64 normalised (x / W, y / H) with a `(K,)` float64 score array beside it
    (`<part>_score`). Points default to NaN with score 0 (missing). Feet are not kept (never drawn or exported).
    """
    body: np.ndarray = field(default_factory=lambda: _points(18))
    body_score: np.ndarray = field(default_factory=lambda: np.zeros(18))
    face: np.ndarray = field(default_factory=lambda: _points(68))
    face_score: np.ndarray = field(default_factory=lambda: np.zeros(68))
    left_hand: np.ndarray = field(default_factory=lambda: _points(21))
    left_hand_score: np.ndarray = field(default_factory=lambda: np.zeros(21))
    right_hand: np.ndarray = field(default_factory=lambda: _points(21))
    right_hand_score: np.ndarray = field(default_factory=lambda: np.zeros(21))

    def __post_init__(self):
        for part in PARTS:
            points = np.asarray(getattr(self, part), dtype=np.float64).reshape(PART_SIZES[part], 2)
            scores = np.asarray(getattr(self, part + "_score"), dtype=np.float64).reshape(PART_SIZES[part])
            setattr(self, part, points)
            setattr(self, part + "_score", scores)

    def visible(self, part: str) -> np.ndarray:
        """`(K,)` bool: score >= VISIBLE_SCORE and finite coordinates."""
        points = getattr(self, part)
        return (getattr(self, part + "_score") >= VISIBLE_SCORE) & np.isfinite(points).all(axis=1)

    def copy(self) -> "PersonPose":
        return PersonPose(**{name: getattr(self, name).copy() for name in self.__dataclass_fields__})


@dataclass
class PoseFrame:
    """All people of one frame. `width`, `height`: the canvas in pixels that the normalised coordinates refer to
    (for DWPose, the analysed image's original size)."""
    people: list[PersonPose]
    width: int
    height: int

    @property
    def aspect(self) -> float:
        """width / height, the factor that turns normalised x into MusePose's height units."""
        return self.width / self.height


def person_from_openpose134(keypoints: np.ndarray, scores: np.ndarray) -> PersonPose:
    """A PersonPose from DWPose's 134-point OpenPose layout (spec §1.5): 0-17 body, 18-23 feet (dropped),
    24-91 face, 92-112 left hand, 113-133 right hand.

    Args:
        keypoints: `(134, 2)` normalised coordinates.
        scores: `(134,)` scores.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    return PersonPose(body=keypoints[0:18], body_score=scores[0:18], face=keypoints[24:92], face_score=scores[24:92],
                      left_hand=keypoints[92:113], left_hand_score=scores[92:113],
                      right_hand=keypoints[113:134], right_hand_score=scores[113:134])


# ---------------------------------------------------------------------------------------------------------------
# POSE_KEYPOINT writer

def _flat_part(points: np.ndarray, visible: np.ndarray, width: int, height: int) -> list[float]:
    values: list[float] = []
    for (x, y), shown in zip(points, visible):
        px, py = float(x) * width, float(y) * height
        # a point that does not fit a JSON number (MusePose-compat overflow) is written as missing
        if shown and math.isfinite(px) and math.isfinite(py):
            values += [px, py, 1.0]
        else:
            values += [0.0, 0.0, 0.0]
    return values


def to_pose_keypoint(frame: PoseFrame, body: bool = True, hands: bool = True, face: bool = True,
                     canvas_size: tuple[int, int] | None = None) -> dict:
    """One POSE_KEYPOINT frame dict in comfyui_controlnet_aux's format.

    Visible points are written `[x, y, 1.0]` in canvas pixels, missing ones `[0.0, 0.0, 0.0]`. A face or hand with
    no visible point, or disabled, is None; the body is always 54 numbers (zeros when disabled or empty). The face
    is 70 points: the 68 face points, then body OP14 (right eye) and OP15 (left eye), as DWPose fills the OpenPose
    pupils. Real scores are not written (the format has none: readers keep only c >= 1).

    Args:
        frame: the poses.
        body, hands, face: parts to write.
        canvas_size: `(width, height)` to write instead of the frame's own canvas (coordinates are normalised, so
            this rescales them too).
    Returns:
        `{"people": [...], "canvas_width": int, "canvas_height": int}`.
    """
    width, height = canvas_size if canvas_size is not None else (frame.width, frame.height)
    width, height = int(width), int(height)
    people = []
    for person in frame.people:
        body_visible = person.visible("body")
        entry = {"pose_keypoints_2d": _flat_part(person.body, body_visible if body else np.zeros(18, bool),
                                                 width, height)}
        face_visible = person.visible("face")
        if face and face_visible.any():
            points = np.concatenate([person.face, person.body[[14, 15]]])
            entry["face_keypoints_2d"] = _flat_part(points, np.concatenate([face_visible, body_visible[[14, 15]]]),
                                                    width, height)
        else:
            entry["face_keypoints_2d"] = None
        for part, key in (("left_hand", "hand_left_keypoints_2d"), ("right_hand", "hand_right_keypoints_2d")):
            visible = person.visible(part)
            entry[key] = _flat_part(getattr(person, part), visible, width, height) if hands and visible.any() else None
        people.append(entry)
    return {"people": people, "canvas_width": width, "canvas_height": height}


def to_pose_keypoint_list(frames: list[PoseFrame], **kwargs) -> list[dict]:
    """POSE_KEYPOINT value (a list, one dict per frame); keyword arguments as in `to_pose_keypoint`."""
    return [to_pose_keypoint(frame, **kwargs) for frame in frames]


# ---------------------------------------------------------------------------------------------------------------
# POSE_KEYPOINT reader

def _parse_part(values, n_points: int, key: str, where: str, width: int, height: int,
                accepted: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    points, scores = _points(n_points), np.zeros(n_points)
    if values is None:
        return points, scores
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], (list, tuple)):
        values = [v for triplet in values for v in triplet]  # tolerate nested triplets
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        return points, scores
    if array.size % 3 or array.size // 3 not in accepted:
        raise ValueError(f"{where}: '{key}' has {array.size} numbers; expected "
                         f"{' or '.join(str(3 * n) for n in accepted)} ({n_points} points as x, y, c)")
    triplets = array.reshape(-1, 3)[:n_points]
    shown = (triplets[:, 2] > 0) & np.isfinite(triplets[:, :2]).all(axis=1)
    xy = triplets[:, :2].copy()
    # comfyui_controlnet_aux's readers: a part whose visible points all lie within [-1, 1] is normalised,
    # otherwise it is in canvas pixels
    if shown.any() and not (np.abs(xy[shown]) <= 1).all():
        xy[:, 0] /= width
        xy[:, 1] /= height
    points[shown] = xy[shown]
    scores[shown] = 1.0  # the format keeps visibility, not scores
    return points, scores


def frame_from_pose_keypoint(data: dict, where: str = "POSE_KEYPOINT frame") -> PoseFrame:
    """Parse one POSE_KEYPOINT frame dict (as written by comfyui_controlnet_aux's DWPose node or by
    `to_pose_keypoint`) into a PoseFrame.

    A point counts as visible when its c > 0 (comfyui_controlnet_aux's own readers need c >= 1.0, which its
    writers always use; c > 0 also accepts writers that store real scores). Visible points get score 1.0.
    Coordinates may be pixels or normalised, decided per part like comfyui_controlnet_aux's readers. The face
    accepts 70 points (the last two, the OpenPose pupils, are dropped) or 68.

    Raises:
        ValueError: not a dict, no canvas size, or a part of the wrong length (the message names the frame,
            person and key).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a dict with 'people', 'canvas_width' and 'canvas_height', "
                         f"got {type(data).__name__}")
    try:
        width, height = int(data["canvas_width"]), int(data["canvas_height"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: 'canvas_width' and 'canvas_height' must be positive integers, got "
                         f"{data.get('canvas_width')!r} x {data.get('canvas_height')!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"{where}: canvas size must be positive, got {width} x {height}")
    people = []
    for n, entry in enumerate(data.get("people") or []):
        at = f"{where}, person {n}"
        if not isinstance(entry, dict):
            raise ValueError(f"{at}: expected a dict, got {type(entry).__name__}")
        body, body_score = _parse_part(entry.get("pose_keypoints_2d"), 18, "pose_keypoints_2d", at, width, height,
                                       (18,))
        face, face_score = _parse_part(entry.get("face_keypoints_2d"), 68, "face_keypoints_2d", at, width, height,
                                       (70, 68))
        left, left_score = _parse_part(entry.get("hand_left_keypoints_2d"), 21, "hand_left_keypoints_2d", at,
                                       width, height, (21,))
        right, right_score = _parse_part(entry.get("hand_right_keypoints_2d"), 21, "hand_right_keypoints_2d", at,
                                         width, height, (21,))
        people.append(PersonPose(body, body_score, face, face_score, left, left_score, right, right_score))
    return PoseFrame(people=people, width=width, height=height)


def from_pose_keypoint(value) -> list[PoseFrame]:
    """Parse a POSE_KEYPOINT value: a list of frame dicts, one frame dict, or their JSON text (the node's
    "openpose_json" UI output). Returns one PoseFrame per frame."""
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"POSE_KEYPOINT: expected a list of frame dicts, got {type(value).__name__}")
    return [frame_from_pose_keypoint(item, f"POSE_KEYPOINT frame {i}") for i, item in enumerate(value)]


def as_pose_frames(value) -> list[PoseFrame]:
    """PoseFrame list from PoseFrames, POSE_KEYPOINT dicts/lists/JSON, or a mix of frames and dicts."""
    if isinstance(value, PoseFrame):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(item, PoseFrame) for item in value):
        return list(value)
    if isinstance(value, (list, tuple)):
        return [item if isinstance(item, PoseFrame) else frame_from_pose_keypoint(item, f"POSE_KEYPOINT frame {i}")
                for i, item in enumerate(value)]
    return from_pose_keypoint(value)
