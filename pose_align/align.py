"""MusePose pose alignment (spec/pose.md §3; TMElyralab/MusePose pose_align.py, align_img and
run_align_video_with_filterPose_translate_smooth).

The reference person's segment lengths are measured against one video frame (the align frame), giving nine
scale factors. Every video frame is then rebuilt as a kinematic chain about its neck, each segment scaled by its
factor with the video's joint angles kept, and translated so that the align frame's neck lands on the reference's
neck. Distances are taken in "height units" (x * W / H, y), so they are isotropic and comparable between the
reference and the video; the result is normalised to the reference canvas.

Two modes:
- "compat" reproduces MusePose's arithmetic, quirks included (spec §3.6): missing points enter as -1
  placeholders (so a missing parent bends its children), an infinite scale turns the points it touches into
  NaN and then -1, and with several people `hands[1]` is person 1's left hand.
- "robust" (default) uses only visible points: a scale term counts only when all its points are visible in both
  poses, undefined scales fall back to the mean of the defined ones (or 1), a child whose parent is missing
  moves with its nearest visible ancestor, a hand whose wrist is missing is anchored on its own point 0, the face
  follows the nose, and each person's own hands are used.

Only person 0 (the highest-scoring detection) of each frame is aligned, as in MusePose.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .optional import opencv
from .keypoints import PersonPose, PoseFrame, as_pose_frames

SCALE_NAMES = ("neck", "face", "shoulder", "arm_upper", "arm_lower", "hand", "body_len", "leg_upper", "leg_lower")
MODES = ("robust", "compat")
NECK = 1
# (child, parent, scale) in the order MusePose applies them; parents always come before their children
CHAIN = ((0, 1, "neck"), (14, 0, "face"), (15, 0, "face"), (16, 0, "face"), (17, 0, "face"),
         (2, 1, "shoulder"), (5, 1, "shoulder"), (3, 2, "arm_upper"), (4, 3, "arm_lower"),
         (6, 5, "arm_upper"), (7, 6, "arm_lower"), (8, 1, "body_len"), (11, 1, "body_len"),
         (9, 8, "leg_upper"), (10, 9, "leg_lower"), (12, 11, "leg_upper"), (13, 12, "leg_lower"))
HAND_TERMS = (1, 5, 9, 13, 17)  # hand scale: wrist (point 0) to the base of each finger
MIN_DISTANCE = 1e-6  # robust: shorter video segments (height units) give no scale term


class NoPersonError(ValueError):
    """The reference or the video has no usable person (none detected, or no visible neck where one is needed)."""


@dataclass
class FrameAlignment:
    """What happened to one output frame.

    Attributes:
        frame: index in the input video poses.
        people: people in the input frame.
        person_found: person 0 exists with at least one visible body point (otherwise the output frame is empty).
        missing_body: OpenPose-18 indices of person 0's body points that were not visible.
        missing_hands: "left" and/or "right" when person 0 had no visible point of that hand.
    """
    frame: int
    people: int
    person_found: bool
    missing_body: tuple[int, ...] = ()
    missing_hands: tuple[str, ...] = ()


@dataclass
class AlignReport:
    """Per-sequence report of `align_pose_sequence`.

    Attributes:
        mode: "robust" or "compat".
        align_frame: the requested align frame.
        scale_frame: the frame the scales and offset were measured on (robust mode moves forward to the first
            frame with a visible neck when the align frame has none).
        scales: the nine scale factors actually used (SCALE_NAMES).
        scale_fallbacks: scales that could not be measured and were replaced (robust: by the mean of the others
            or 1; compat: NaN by 1, as MusePose does).
        offset: (dx, dy) neck translation in height units (reference neck - video neck on scale_frame).
        frames: one FrameAlignment per output frame.
    """
    mode: str
    align_frame: int
    scale_frame: int
    scales: dict[str, float]
    scale_fallbacks: tuple[str, ...]
    offset: tuple[float, float]
    frames: list[FrameAlignment] = field(default_factory=list)

    @property
    def missing_person_frames(self) -> list[int]:
        """Input frame indices whose output frame is empty (no person)."""
        return [f.frame for f in self.frames if not f.person_found]

    @property
    def missing_keypoint_frames(self) -> list[int]:
        """Input frame indices where person 0 was found but some body point or a hand was missing."""
        return [f.frame for f in self.frames if f.person_found and (f.missing_body or f.missing_hands)]

    def summary(self) -> str:
        """A few plain lines for the node's UI / log."""
        scales = ", ".join(f"{name} {self.scales[name]:.3f}" for name in SCALE_NAMES)
        lines = [f"{len(self.frames)} frames aligned ({self.mode}); scales from frame {self.scale_frame}: {scales}"]
        if self.scale_frame != self.align_frame:
            lines.append(f"align frame {self.align_frame} had no person with a visible neck; "
                         f"used frame {self.scale_frame}")
        if self.scale_fallbacks:
            lines.append(f"not measurable, replaced: {', '.join(self.scale_fallbacks)}")
        missing = self.missing_person_frames
        if missing:
            lines.append(f"no person in {len(missing)} frame(s): {_short_list(missing)}")
        partial = self.missing_keypoint_frames
        if partial:
            lines.append(f"missing keypoints in {len(partial)} frame(s): {_short_list(partial)}")
        return "\n".join(lines)


def _short_list(values: list[int], limit: int = 20) -> str:
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def _units(points: np.ndarray, aspect: float) -> np.ndarray:
    out = np.array(points, dtype=np.float64)
    out[..., 0] *= aspect
    return out


def _has_person(frame: PoseFrame) -> bool:
    return bool(frame.people) and bool(frame.people[0].visible("body").any())


def _has_neck(frame: PoseFrame) -> bool:
    return bool(frame.people) and bool(frame.people[0].visible("body")[NECK])


# ---------------------------------------------------------------------------------------------------------------
# compat: MusePose's arithmetic on -1 placeholders

def _placeholder(points: np.ndarray, visible: np.ndarray) -> np.ndarray:
    out = np.array(points, dtype=np.float64)
    out[~visible] = -1.0
    return out


def _musepose_arrays(frame: PoseFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DWPose's pose dict arrays, normalised, -1 at missing points: candidate `(N*18, 2)`,
    hands `(2N, 21, 2)` = all left hands then all right hands, faces `(N, 68, 2)`."""
    people = frame.people
    candidate = np.concatenate([_placeholder(p.body, p.visible("body")) for p in people])
    hands = np.stack([_placeholder(p.left_hand, p.visible("left_hand")) for p in people]
                     + [_placeholder(p.right_hand, p.visible("right_hand")) for p in people])
    faces = np.stack([_placeholder(p.face, p.visible("face")) for p in people])
    return candidate, hands, faces


def _compat_scales(ref: PoseFrame, video: PoseFrame) -> tuple[dict[str, float], tuple[str, ...]]:
    """MusePose's scale estimate: plain ratios of distances between placeholder-filled points.

    The divisions are unguarded, as in MusePose: 0/0 gives NaN, which becomes 1 (listed as a fallback); x/0 gives
    inf, which is kept."""
    r_body, r_hands, _ = _musepose_arrays(ref)
    v_body, v_hands, _ = _musepose_arrays(video)
    r_body, r_hands = _units(r_body, ref.aspect), _units(r_hands, ref.aspect)
    v_body, v_hands = _units(v_body, video.aspect), _units(v_hands, video.aspect)

    def ratio(i, j):
        return np.linalg.norm(r_body[i] - r_body[j]) / np.linalg.norm(v_body[i] - v_body[j])

    with np.errstate(divide="ignore", invalid="ignore"):
        scales = {"neck": ratio(0, 1), "face": ratio(16, 17), "shoulder": ratio(2, 5),
                  "arm_upper": (ratio(2, 3) + ratio(5, 6)) / 2, "arm_lower": (ratio(3, 4) + ratio(6, 7)) / 2}
        total, count = 0.0, 0
        for h in (0, 1):
            for j in HAND_TERMS:
                v_dist = np.linalg.norm(v_hands[h, 0] - v_hands[h, j])
                if v_dist != 0:
                    total = total + np.linalg.norm(r_hands[h, 0] - r_hands[h, j]) / v_dist
                    count += 1
        if count:
            scales["hand"] = (total / count + scales["arm_upper"] + scales["arm_lower"]) / 3
        else:
            scales["hand"] = (scales["arm_upper"] + scales["arm_lower"]) / 2
        scales["body_len"] = (np.linalg.norm(r_body[1] - (r_body[8] + r_body[11]) / 2)
                              / np.linalg.norm(v_body[1] - (v_body[8] + v_body[11]) / 2))
        scales["leg_upper"] = (ratio(8, 9) + ratio(11, 12)) / 2
        scales["leg_lower"] = (ratio(9, 10) + ratio(12, 13)) / 2
    fallbacks = tuple(name for name in SCALE_NAMES if np.isnan(scales[name]))
    return {name: 1.0 if np.isnan(scales[name]) else float(scales[name]) for name in SCALE_NAMES}, fallbacks


def _radial(points: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
    # MusePose scales with cv2.getRotationMatrix2D(center, 0, s) applied as points @ A.T + t. Keeping that form keeps
    # its results bit for bit: the centre goes through a float32 Point2f (about 1e-8 of rounding), and an infinite
    # scale gives NaN (sin(0) * inf), later turned into -1
    cv2 = opencv()
    matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), 0, float(scale))
    return np.dot(points, matrix[:, :2].T) + matrix[:, 2]


def _compat_align(frame: PoseFrame, scales: dict[str, float], offset: np.ndarray, ref_aspect: float) -> PersonPose:
    """MusePose's align_img plus its translation and reference normalisation, for person 0 of `frame`."""
    candidate, hands_n, faces_n = _musepose_arrays(frame)
    body = _units(candidate, frame.aspect)
    hands = _units(hands_n, frame.aspect)
    faces = _units(faces_n, frame.aspect)
    # offsets are read from the unmodified frame
    head = body[[14, 15, 16, 17]] - body[[0]]
    seg = {k: body[[k]] - body[[p]] for k, p in ((3, 2), (4, 3), (6, 5), (7, 6), (9, 8), (10, 9), (12, 11), (13, 12))}
    hand_r = hands[1] - body[[4]]  # hands[1] follows the right wrist (person 1's left hand when N > 1)
    hand_l = hands[0] - body[[7]]
    s = scales
    with np.errstate(invalid="ignore", over="ignore"):
        body[[0]] = _radial(body[[0]], body[1], s["neck"])
        body[[14, 15, 16, 17]] = _radial(head + body[[0]], body[0], s["face"])
        body[[2, 5]] = _radial(body[[2, 5]], body[1], s["shoulder"])
        body[[3]] = _radial(seg[3] + body[[2]], body[2], s["arm_upper"])
        body[[4]] = _radial(seg[4] + body[[3]], body[3], s["arm_lower"])
        hands[1] = _radial(hand_r + body[[4]], body[4], s["hand"])
        body[[6]] = _radial(seg[6] + body[[5]], body[5], s["arm_upper"])
        body[[7]] = _radial(seg[7] + body[[6]], body[6], s["arm_lower"])
        hands[0] = _radial(hand_l + body[[7]], body[7], s["hand"])
        body[[8, 11]] = _radial(body[[8, 11]], body[1], s["body_len"])
        body[[9]] = _radial(seg[9] + body[[8]], body[8], s["leg_upper"])
        body[[10]] = _radial(seg[10] + body[[9]], body[9], s["leg_lower"])
        body[[12]] = _radial(seg[12] + body[[11]], body[11], s["leg_upper"])
        body[[13]] = _radial(seg[13] + body[[12]], body[12], s["leg_lower"])
        # -1 placeholders are restored element by element, NaN becomes -1 (inf becomes +-max float)
        body[candidate == -1.0] = -1.0
        hands[hands_n == -1.0] = -1.0
        faces[faces_n == -1.0] = -1.0
        body, hands, faces = (np.nan_to_num(a, nan=-1.0) for a in (body, hands, faces))
        body, hands, faces = (a + offset for a in (body, hands, faces))
        for a in (body, hands, faces):
            a[..., 0] /= ref_aspect
    first = frame.people[0]
    people = frame.people
    right_source = people[1].left_hand_score if len(people) > 1 else first.right_hand_score
    return PersonPose(body=body[:18], body_score=first.body_score, face=faces[0], face_score=first.face_score,
                      left_hand=hands[0], left_hand_score=first.left_hand_score,
                      right_hand=hands[1], right_hand_score=right_source)


# ---------------------------------------------------------------------------------------------------------------
# robust: visible points only

def _robust_scales(ref: PoseFrame, video: PoseFrame) -> tuple[dict[str, float], tuple[str, ...]]:
    r_person, v_person = ref.people[0], video.people[0]
    r_body, v_body = _units(r_person.body, ref.aspect), _units(v_person.body, video.aspect)
    shown = r_person.visible("body") & v_person.visible("body")

    def term(r_points, v_points, ok):
        if not ok:
            return None
        v_dist = np.linalg.norm(v_points[0] - v_points[1])
        return np.linalg.norm(r_points[0] - r_points[1]) / v_dist if v_dist > MIN_DISTANCE else None

    def ratio(i, j):
        return term(r_body[[i, j]], v_body[[i, j]], shown[i] and shown[j])

    def mean(*values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    raw = {"neck": ratio(0, 1), "face": ratio(16, 17), "shoulder": ratio(2, 5),
           "arm_upper": mean(ratio(2, 3), ratio(5, 6)), "arm_lower": mean(ratio(3, 4), ratio(6, 7))}
    hand_terms = []
    for part in ("left_hand", "right_hand"):
        r_hand, v_hand = _units(getattr(r_person, part), ref.aspect), _units(getattr(v_person, part), video.aspect)
        hand_shown = r_person.visible(part) & v_person.visible(part)
        for j in HAND_TERMS:
            hand_terms.append(term(r_hand[[0, j]], v_hand[[0, j]], hand_shown[0] and hand_shown[j]))
    raw["hand"] = mean(mean(*hand_terms), raw["arm_upper"], raw["arm_lower"])
    hips = shown[1] and shown[8] and shown[11]
    raw["body_len"] = term(np.stack([r_body[1], (r_body[8] + r_body[11]) / 2]),
                           np.stack([v_body[1], (v_body[8] + v_body[11]) / 2]), hips)
    raw["leg_upper"] = mean(ratio(8, 9), ratio(11, 12))
    raw["leg_lower"] = mean(ratio(9, 10), ratio(12, 13))
    defined = [float(v) for v in raw.values() if v is not None]
    fill = sum(defined) / len(defined) if defined else 1.0
    fallbacks = tuple(name for name in SCALE_NAMES if raw[name] is None)
    return {name: fill if raw[name] is None else float(raw[name]) for name in SCALE_NAMES}, fallbacks


def _robust_align(frame: PoseFrame, scales: dict[str, float], offset: np.ndarray, ref_aspect: float) -> PersonPose:
    person = frame.people[0]
    origin = _units(person.body, frame.aspect)
    visible = person.visible("body")
    moved = np.full((18, 2), np.nan)
    # displacement of each joint; a missing joint passes on its nearest visible ancestor's (the neck's is 0)
    shift = np.zeros((18, 2))
    if visible[NECK]:
        moved[NECK] = origin[NECK]
    for child, parent, name in CHAIN:
        if not visible[child]:
            shift[child] = shift[parent]
            continue
        if visible[parent]:
            moved[child] = moved[parent] + scales[name] * (origin[child] - origin[parent])
        else:
            moved[child] = origin[child] + shift[parent]
        shift[child] = moved[child] - origin[child]

    def finish(points, shown):
        out = np.full(points.shape, np.nan)
        out[shown] = points[shown] + offset
        out[shown, 0] /= ref_aspect
        return out

    result = PersonPose(body=finish(moved, visible), body_score=np.where(visible, person.body_score, 0.0))
    for part, wrist in (("right_hand", 4), ("left_hand", 7)):
        shown = person.visible(part)
        if not shown.any():
            continue
        hand = _units(getattr(person, part), frame.aspect)
        if visible[wrist]:
            anchor, anchor_moved = origin[wrist], moved[wrist]
        else:
            anchor = hand[0] if shown[0] else hand[np.flatnonzero(shown)[0]]
            anchor_moved = anchor + shift[wrist]
        new = anchor_moved + scales["hand"] * (hand - anchor)
        setattr(result, part, finish(new, shown))
        setattr(result, part + "_score", np.where(shown, getattr(person, part + "_score"), 0.0))
    shown = person.visible("face")
    if shown.any():
        face = _units(person.face, frame.aspect)
        new = moved[0] + scales["face"] * (face - origin[0]) if visible[0] else face + shift[0]
        result.face = finish(new, shown)
        result.face_score = np.where(shown, person.face_score, 0.0)
    return result


# ---------------------------------------------------------------------------------------------------------------

def align_pose_sequence(ref_pose, video_poses, align_frame: int = 0, max_frame: int | None = None,
                        mode: str = "robust") -> tuple[list[PoseFrame], AlignReport]:
    """Align a pose video to a reference person (MusePose's pose_align).

    Args:
        ref_pose: the reference: a PoseFrame, a POSE_KEYPOINT frame dict, or a POSE_KEYPOINT list (frame 0 is
            used); person 0 must have a visible neck.
        video_poses: the video's poses: a list of PoseFrames and/or POSE_KEYPOINT frame dicts, or a POSE_KEYPOINT
            list / JSON text.
        align_frame: the video frame compared with the reference; earlier frames are skipped (not output).
        max_frame: frames are taken from the start up to this count (None or 0: all), so the output has
            min(max_frame, N) - align_frame frames.
        mode: "robust" (default) or "compat" (MusePose's exact arithmetic, quirks included).
    Returns:
        (aligned frames, report). Each aligned frame holds person 0 only, normalised to the reference canvas
        (width, height = the reference's), or no people where person 0 was missing (listed in the report).
    Raises:
        NoPersonError: no usable person in the reference, none in the video's frames, or (compat) none with a
            visible neck on the align frame.
        ValueError: unknown mode, align_frame outside the frames, or malformed POSE_KEYPOINT.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}', expected one of {MODES}")
    refs = as_pose_frames(ref_pose)
    if not refs:
        raise NoPersonError("the reference pose has no frames")
    ref = refs[0]
    frames = as_pose_frames(video_poses)
    end = len(frames) if not max_frame else min(int(max_frame), len(frames))
    if not 0 <= align_frame < end:
        raise ValueError(f"align_frame {align_frame} is outside the {end} video frame(s) used "
                         f"({len(frames)} given, max_frame {max_frame})")
    if not _has_neck(ref):
        found = "no person was found" if not ref.people else "person 0 has no visible neck (both shoulders)"
        raise NoPersonError(f"no person found in the reference pose: {found}; use a reference image that shows "
                            f"the person's head and shoulders")
    used = range(align_frame, end)
    if not any(_has_person(frames[i]) for i in used):
        raise NoPersonError(f"no person found in the video pose: none of frames {align_frame}..{end - 1} "
                            f"has a detected person")
    scale_frame = align_frame
    if not _has_neck(frames[align_frame]):
        with_neck = [i for i in used if _has_neck(frames[i])]
        if not with_neck:
            raise NoPersonError(f"no person with a visible neck (both shoulders) in video frames "
                                f"{align_frame}..{end - 1}: the alignment is anchored on the neck")
        if mode == "compat":
            raise NoPersonError(f"align frame {align_frame} has no person with a visible neck, which MusePose "
                                f"needs; choose an align_frame that has one (frame {with_neck[0]} does) or use "
                                f"mode 'robust'")
        scale_frame = with_neck[0]
    measured = frames[scale_frame]
    scales, fallbacks = (_compat_scales if mode == "compat" else _robust_scales)(ref, measured)
    offset = (_units(ref.people[0].body[NECK], ref.aspect)
              - _units(measured.people[0].body[NECK], measured.aspect))
    align = _compat_align if mode == "compat" else _robust_align
    aligned, records = [], []
    for i in used:
        frame = frames[i]
        found = _has_person(frame)
        if found:
            person = frame.people[0]
            aligned.append(PoseFrame([align(frame, scales, offset, ref.aspect)], ref.width, ref.height))
            missing_body = tuple(int(j) for j in np.flatnonzero(~person.visible("body")))
            missing_hands = tuple(side for side in ("left", "right") if not person.visible(side + "_hand").any())
            records.append(FrameAlignment(i, len(frame.people), True, missing_body, missing_hands))
        else:
            aligned.append(PoseFrame([], ref.width, ref.height))
            records.append(FrameAlignment(i, len(frame.people), False))
    report = AlignReport(mode=mode, align_frame=align_frame, scale_frame=scale_frame, scales=scales,
                         scale_fallbacks=fallbacks, offset=(float(offset[0]), float(offset[1])), frames=records)
    return aligned, report
