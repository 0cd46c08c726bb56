"""DWPose whole-body pose extraction with onnxruntime (spec/pose.md §1).

Two ONNX models: a YOLOX person detector (`yolox_l.onnx`, input `(1, 3, 640, 640)`, output `(1, 8400, 85)`) and
the DWPose-l whole-body model (`dw-ll_ucoco_384.onnx`, input `(B, 3, 384, 288)`, SimCC outputs `simcc_x
(B, 133, 576)` and `simcc_y (B, 133, 768)`). Tensor names, shapes and dtypes are read from the sessions and checked
when the files are opened; nothing here depends on the names. The pre- and post-processing follows the DWPose
ONNX reference (IDEA-Research/DWPose annotator/dwpose: onnxdet.py, onnxpose.py, wholebody.py):

    RGB frame -> (BGR) letterbox 640 -> YOLOX decode -> class-0 NMS (0.1 / IoU 0.45) -> score > 0.3
              -> per box: centre/scale x1.25, aspect 3:4, affine crop 288x384 -> (x - mean) / std (RGB)
              -> SimCC argmax, score = min(max_x, max_y) -> image pixels -> COCO-WholeBody 133
              -> OpenPose 134 (neck synthesised) -> PoseFrame (normalised)

Colour order (spec §7, decided): YOLOX was trained on BGR frames, the pose model on RGB (its config has
bgr_to_rgb=True), so the detector gets BGR and the pose model RGB. comfyui_controlnet_aux feeds RGB to both.

onnxruntime is imported only when a model is opened, so `import pose_align` works without it.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from . import optional
from .image import hwc3, resize_for_detection
from .keypoints import OPENPOSE_FROM_COCO, PoseFrame, person_from_openpose134

# pose-model normalisation, RGB order (DWPose-l config data_preprocessor)
POSE_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
POSE_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
_POSE_INV_STD = (1.0 / POSE_STD).astype(np.float32)
YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD_VALUE = 114
DET_PRE_NMS_SCORE = 0.1
DET_NMS_IOU = 0.45
DET_KEEP_SCORE = 0.3
PERSON_CLASS = 0
BOX_PADDING = 1.25
NECK_SHOULDER_SCORE = 0.3
WHOLEBODY_KEYPOINTS = 133

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
PREFERRED_PROVIDERS = ("CUDAExecutionProvider",)


class PoseModelError(ValueError):
    """A DWPose model file is missing, unreadable, or not the kind of model expected; the message names the file."""


# ---------------------------------------------------------------------------------------------------------------
# sessions

def _onnxruntime():
    return optional.onnxruntime()


def select_providers(requested=None) -> list[str]:
    """onnxruntime execution providers to use.

    Args:
        requested: None or "auto" (CUDAExecutionProvider when onnxruntime lists it, then CPU), "cpu", "cuda",
            or a list of provider names.
    Returns:
        provider names, always ending with CPUExecutionProvider.
    Raises:
        ValueError: a requested provider is not available in this onnxruntime build.
    """
    available = _onnxruntime().get_available_providers()
    if requested is None or (isinstance(requested, str) and requested.lower() == "auto"):
        chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    else:
        names = [requested] if isinstance(requested, str) else list(requested)
        aliases = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
        chosen = [aliases.get(name.lower(), name) for name in names]
        missing = [name for name in chosen if name not in available]
        if missing:
            raise ValueError(f"onnxruntime provider(s) {missing} not available in this onnxruntime build "
                             f"(available: {available}); install onnxruntime-gpu for CUDA, or choose provider 'auto' or 'CPU'")
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def open_session(path: str, providers: list[str] | None = None):
    """An onnxruntime InferenceSession for `path`, retried on CPU alone if the preferred providers fail.

    Raises:
        PoseModelError: file missing, or onnxruntime cannot load it.
    """
    ort = _onnxruntime()
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise PoseModelError(f"{name}: file not found ({path})")
    providers = list(providers) if providers else select_providers()
    attempts = [providers] if providers == ["CPUExecutionProvider"] else [providers, ["CPUExecutionProvider"]]
    error = None
    for attempt in attempts:
        try:
            return ort.InferenceSession(path, providers=attempt)
        except Exception as exc:  # onnxruntime raises several exception types for unreadable files
            error = exc
    raise PoseModelError(f"{name}: onnxruntime could not open it as an ONNX model ({path}): "
                         f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}")


def _describe(args) -> str:
    parts = []
    for arg in args:
        shape = ", ".join(str(d) if isinstance(d, int) else repr(d) if d else "?" for d in arg.shape)
        parts.append(f"{arg.name} {arg.type.replace('tensor(', '').rstrip(')')} ({shape})")
    return "[" + "; ".join(parts) + "]"


def _signature(session) -> str:
    return f"inputs {_describe(session.get_inputs())}, outputs {_describe(session.get_outputs())}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _image_input_problem(inputs, fixed_size: bool) -> str | None:
    """What keeps an onnxruntime session's inputs from being one float `(B, 3, H, W)` image, or None.

    Args:
        inputs: `session.get_inputs()`.
        fixed_size: H and W must be numbers (not symbolic).
    """
    if len(inputs) != 1:
        return f"it has {len(inputs)} inputs"
    shape = inputs[0].shape
    if len(shape) != 4:
        return f"its input has rank {len(shape)}"
    if _is_int(shape[1]) and shape[1] != 3:
        return f"its input has {shape[1]} channels"
    if fixed_size and not (_is_int(shape[2]) and _is_int(shape[3])):
        return "its input height and width are not fixed numbers"
    if inputs[0].type not in _ORT_DTYPES:
        return f"its input type is {inputs[0].type}"
    return None


# ---------------------------------------------------------------------------------------------------------------
# detector: YOLOX

def letterbox(image: np.ndarray, input_hw: tuple[int, int] = (640, 640)) -> tuple[np.ndarray, float]:
    """YOLOX input: resize by r = min(H_in / H, W_in / W) (INTER_LINEAR), paste top-left on a canvas of 114.

    Args:
        image: `(H, W, 3)` uint8 (BGR for YOLOX).
        input_hw: model input `(H_in, W_in)`.
    Returns:
        `(1, 3, H_in, W_in)` float32 without scaling or normalisation, and r.
    """
    height, width = image.shape[:2]
    h_in, w_in = input_hw
    r = min(h_in / height, w_in / width)
    new_w, new_h = int(width * r), int(height * r)
    padded = np.full((h_in, w_in, 3), YOLOX_PAD_VALUE, dtype=np.uint8)
    if new_w > 0 and new_h > 0:
        cv2 = optional.opencv()
        padded[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32), r


@functools.lru_cache(maxsize=8)
def yolox_grid(input_hw: tuple[int, int], strides=YOLOX_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Anchor cells `(A, 2)` as (gx, gy) and their strides `(A,)`: levels in stride order, row-major within each
    (640 x 640 gives 80*80 + 40*40 + 20*20 = 8400)."""
    cells, cell_strides = [], []
    for stride in strides:
        rows, cols = input_hw[0] // stride, input_hw[1] // stride
        gx, gy = np.meshgrid(np.arange(cols), np.arange(rows))
        cells.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        cell_strides.append(np.full(rows * cols, stride))
    return np.concatenate(cells).astype(np.float64), np.concatenate(cell_strides).astype(np.float64)


def decode_yolox(prediction: np.ndarray, ratio: float, input_hw: tuple[int, int],
                 classes=None) -> tuple[np.ndarray, np.ndarray]:
    """Raw YOLOX rows to boxes and class scores.

    Row t: centre ((t0 + gx) * s, (t1 + gy) * s) (no half-cell offset), size (exp(t2) * s, exp(t3) * s);
    class scores t4 * t[5 + c] (the export already applied the sigmoids).

    Args:
        prediction: `(A, 5 + C)`.
        ratio: letterbox r.
        input_hw: model input size.
        classes: class indices to score (default all).
    Returns:
        boxes `(A, 4)` xyxy in original-image pixels (not clipped), scores `(A, C)` (C = len(classes)), float64.
    """
    cells, strides = yolox_grid(tuple(input_hw))
    if len(cells) != len(prediction):
        raise ValueError(f"detector output has {len(prediction)} rows, expected {len(cells)} anchors for input "
                         f"{input_hw[0]}x{input_hw[1]} with strides {YOLOX_STRIDES}")
    geometry = prediction[:, :5].astype(np.float64)
    centre = (geometry[:, :2] + cells) * strides[:, None]
    size = np.exp(geometry[:, 2:4]) * strides[:, None]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) / ratio
    class_scores = prediction[:, 5:] if classes is None else prediction[:, [5 + c for c in classes]]
    return boxes, geometry[:, 4:5] * class_scores.astype(np.float64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS, score descending, suppressing IoU > threshold, with the +1-pixel area convention of the
    reference ((x2 - x1 + 1) * (y2 - y1 + 1)). Returns kept indices in score order."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def select_people(boxes: np.ndarray, person: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes as the reference keeps them: candidates with class-0 score > 0.1, NMS at IoU 0.45, then
    score > 0.3. NMS is class-aware, so running it on class 0 alone gives the reference's person rows.

    Args:
        boxes: `(A, 4)` decoded boxes; person: `(A,)` class-0 scores.
    Returns:
        boxes `(N, 4)` and scores `(N,)`, highest score first (this order is the person order downstream).
    """
    candidates = np.flatnonzero(person > DET_PRE_NMS_SCORE)
    if candidates.size == 0:
        return np.zeros((0, 4)), np.zeros(0)
    kept = candidates[nms(boxes[candidates], person[candidates], DET_NMS_IOU)]
    kept = kept[person[kept] > DET_KEEP_SCORE]
    return boxes[kept], person[kept]


class YoloxDetector:
    """YOLOX person detector on onnxruntime.

    Args:
        path: the .onnx file (e.g. yolox_l.onnx).
        providers: onnxruntime providers (see `select_providers`).
    Raises:
        PoseModelError: missing file or a model whose signature is not a YOLOX detector's.
    """

    def __init__(self, path: str, providers=None):
        self.path = path
        self.session = open_session(path, providers)
        name = os.path.basename(path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        expected = ("expected a YOLOX detector with one float input of shape (1, 3, H, W) and one output of shape "
                    "(1, anchors, 5 + classes)")
        problem = _image_input_problem(inputs, fixed_size=False)
        if problem is None:
            if len(outputs) != 1:
                problem = f"it has {len(outputs)} outputs"
            elif len(outputs[0].shape) != 3:
                problem = f"its output has rank {len(outputs[0].shape)}"
            elif _is_int(outputs[0].shape[2]) and outputs[0].shape[2] < 6:
                problem = f"its output rows have {outputs[0].shape[2]} values (fewer than 5 + 1 class)"
        if problem is None:
            h, w = inputs[0].shape[2:]
            self.input_hw = (h, w) if _is_int(h) and _is_int(w) else (640, 640)
            anchors = len(yolox_grid(self.input_hw)[0])
            if _is_int(outputs[0].shape[1]) and outputs[0].shape[1] != anchors:
                problem = (f"its output has {outputs[0].shape[1]} rows but a {self.input_hw[0]}x{self.input_hw[1]} "
                           f"input has {anchors} anchors at strides {YOLOX_STRIDES}")
        if problem:
            raise PoseModelError(f"{name}: {expected}; {problem} ({_signature(self.session)})")
        self.input_name = inputs[0].name
        self.input_dtype = _ORT_DTYPES[inputs[0].type]

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes `(N, 4)` xyxy in pixels of `image_bgr` and scores `(N,)`, best first."""
        blob, ratio = letterbox(image_bgr, self.input_hw)
        prediction = self.session.run(None, {self.input_name: blob.astype(self.input_dtype)})[0][0]
        boxes, scores = decode_yolox(prediction, ratio, self.input_hw, classes=(PERSON_CLASS,))
        return select_people(boxes, scores[:, 0])


# ---------------------------------------------------------------------------------------------------------------
# pose model: crop, SimCC decode

def box_center_scale(box, input_wh: tuple[int, int], padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre and crop size of a box: size x1.25, then widened or heightened to the input aspect w / h.

    Args:
        box: `(4,)` x1, y1, x2, y2.
        input_wh: pose input `(w, h)`, e.g. (288, 384).
    Returns:
        centre `(2,)`, scale `(2,)` (crop width and height in image pixels), float64.
    """
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    scale = np.array([x2 - x1, y2 - y1]) * padding
    aspect = input_wh[0] / input_wh[1]
    if scale[0] > scale[1] * aspect:
        scale = np.array([scale[0], scale[0] / aspect])
    else:
        scale = np.array([scale[1] * aspect, scale[1]])
    return center, scale


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_wh: tuple[int, int]) -> np.ndarray:
    """`(2, 3)` affine mapping the crop window onto the model input, no rotation: k = w / s_w,
    M = [[k, 0, w/2 - k c_x], [0, k, h/2 - k c_y]] (what the reference's three-point warp reduces to)."""
    k = input_wh[0] / scale[0]
    return np.array([[k, 0.0, input_wh[0] / 2 - k * center[0]],
                     [0.0, k, input_wh[1] / 2 - k * center[1]]])


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, input_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """SimCC decode: argmax per axis (first maximum wins), score = min(max_x, max_y) (the DWPose / mmpose rule).

    Locations with score <= 0 are set to -1 before scaling. Bins are divided by the split ratio
    (output length / input length per axis, 2.0 for DWPose); no sub-bin refinement.

    Args:
        simcc_x: `(N, K, Wx)`; simcc_y: `(N, K, Hy)`.
        input_wh: pose input `(w, h)`.
    Returns:
        locations `(N, K, 2)` in crop pixels, scores `(N, K)`, float64.
    """
    simcc_x = simcc_x.astype(np.float32)
    simcc_y = simcc_y.astype(np.float32)
    locations = np.stack([simcc_x.argmax(axis=2), simcc_y.argmax(axis=2)], axis=-1).astype(np.float64)
    scores = np.minimum(simcc_x.max(axis=2), simcc_y.max(axis=2)).astype(np.float64)
    locations[scores <= 0] = -1
    locations /= np.array([simcc_x.shape[2] / input_wh[0], simcc_y.shape[2] / input_wh[1]])
    return locations, scores


class WholebodyPose:
    """DWPose whole-body (COCO-WholeBody 133) SimCC model on onnxruntime.

    Args:
        path: the .onnx file (e.g. dw-ll_ucoco_384.onnx).
        providers: onnxruntime providers.
    Raises:
        PoseModelError: missing file or a model whose signature is not a 133-keypoint SimCC model's.
    """

    def __init__(self, path: str, providers=None):
        self.path = path
        self.session = open_session(path, providers)
        name = os.path.basename(path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        expected = ("expected a whole-body SimCC pose model with one float input of shape (B, 3, H, W) and two "
                    "outputs simcc_x (B, 133, k*W) and simcc_y (B, 133, k*H)")
        problem = _image_input_problem(inputs, fixed_size=True)
        if problem is None:
            if len(outputs) != 2:
                problem = f"it has {len(outputs)} output{'s' if len(outputs) != 1 else ''}"
            elif any(len(o.shape) != 3 for o in outputs):
                problem = f"its outputs have ranks {[len(o.shape) for o in outputs]}"
        if problem is None:
            names = [o.name for o in outputs]
            order = [names.index("simcc_x"), names.index("simcc_y")] if {"simcc_x", "simcc_y"} <= set(names) else [0, 1]
            out_x, out_y = outputs[order[0]], outputs[order[1]]
            h_in, w_in = inputs[0].shape[2:]
            self.input_wh = (w_in, h_in)
            if any(_is_int(o.shape[1]) and o.shape[1] != WHOLEBODY_KEYPOINTS for o in (out_x, out_y)):
                problem = (f"its outputs have {out_x.shape[1]} and {out_y.shape[1]} keypoints, not "
                           f"{WHOLEBODY_KEYPOINTS} (COCO-WholeBody)")
            elif _is_int(out_x.shape[2]) and _is_int(out_y.shape[2]):
                ratio_x, ratio_y = out_x.shape[2] / w_in, out_y.shape[2] / h_in
                if ratio_x != ratio_y or ratio_x <= 0:
                    problem = (f"simcc_x length {out_x.shape[2]} / input width {w_in} and simcc_y length "
                               f"{out_y.shape[2]} / input height {h_in} differ ({ratio_x:g} vs {ratio_y:g})")
        if problem:
            raise PoseModelError(f"{name}: {expected}; {problem} ({_signature(self.session)})")
        self.input_name = inputs[0].name
        self.input_dtype = _ORT_DTYPES[inputs[0].type]
        self.output_names = [out_x.name, out_y.name]
        # a static batch of 1 must be fed crop by crop; otherwise all crops go in one run
        self.batched = not (_is_int(inputs[0].shape[0]) and inputs[0].shape[0] == 1)

    def preprocess(self, image_rgb: np.ndarray, box, out: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One crop: `(3, h, w)` float32 normalised (RGB) (written into `out` when given), its centre and scale."""
        center, scale = box_center_scale(box, self.input_wh)
        cv2 = optional.opencv()
        crop = cv2.warpAffine(image_rgb, crop_matrix(center, scale, self.input_wh), self.input_wh,
                              flags=cv2.INTER_LINEAR)
        normalised = np.subtract(crop, POSE_MEAN, dtype=np.float32)
        normalised *= _POSE_INV_STD
        if out is None:
            out = np.empty((3, self.input_wh[1], self.input_wh[0]), np.float32)
        out[...] = normalised.transpose(2, 0, 1)
        return out, center, scale

    def __call__(self, image_rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints of each box.

        Args:
            image_rgb: `(H, W, 3)` uint8 RGB.
            boxes: `(N, 4)` xyxy pixels.
        Returns:
            keypoints `(N, 133, 2)` in image pixels, scores `(N, 133)`, float64 (COCO-WholeBody order).
        """
        if len(boxes) == 0:
            return np.zeros((0, WHOLEBODY_KEYPOINTS, 2)), np.zeros((0, WHOLEBODY_KEYPOINTS))
        batch = np.empty((len(boxes), 3, self.input_wh[1], self.input_wh[0]), np.float32)
        centers, scales = zip(*(self.preprocess(image_rgb, box, batch[i])[1:] for i, box in enumerate(boxes)))
        batch = batch.astype(self.input_dtype, copy=False)
        if self.batched:
            simcc_x, simcc_y = self.session.run(self.output_names, {self.input_name: batch})
        else:
            runs = [self.session.run(self.output_names, {self.input_name: crop[None]}) for crop in batch]
            simcc_x = np.concatenate([r[0] for r in runs])
            simcc_y = np.concatenate([r[1] for r in runs])
        locations, scores = decode_simcc(simcc_x, simcc_y, self.input_wh)
        centers, scales = np.stack(centers)[:, None], np.stack(scales)[:, None]
        keypoints = locations / np.array(self.input_wh, dtype=np.float64) * scales + centers - scales / 2
        return keypoints, scores


def coco_wholebody_to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO-WholeBody 133 to DWPose's 134-point OpenPose layout (spec §1.5).

    The neck (mean of COCO 5 and 6, score 1 if both shoulder scores are > 0.3 else 0) is inserted at index 17,
    shifting everything after it by one; then the body is permuted to OpenPose-18 order.

    Args:
        keypoints: `(N, 133, 2)`; scores: `(N, 133)`.
    Returns:
        `(N, 134, 2)` and `(N, 134)`: 0-17 body, 18-23 feet, 24-91 face, 92-112 left hand, 113-133 right hand.
    """
    neck = keypoints[:, [5, 6]].mean(axis=1)
    neck_score = ((scores[:, 5] > NECK_SHOULDER_SCORE) & (scores[:, 6] > NECK_SHOULDER_SCORE)).astype(np.float64)
    points = np.insert(keypoints, 17, neck, axis=1)
    point_scores = np.insert(scores, 17, neck_score, axis=1)
    source = [17 if coco is None else coco for coco in OPENPOSE_FROM_COCO]
    points[:, :18] = points[:, source].copy()
    point_scores[:, :18] = point_scores[:, source].copy()
    return points, point_scores


# ---------------------------------------------------------------------------------------------------------------
# the detector pair

class DWPoseDetector:
    """YOLOX + DWPose whole-body extraction.

    Args:
        det_path: YOLOX .onnx (yolox_l.onnx).
        pose_path: DWPose .onnx (dw-ll_ucoco_384.onnx).
        providers: None / "auto" (CUDA when available, else CPU), "cpu", "cuda", or provider names.
        full_image_fallback: when no person is detected, run the pose model on the whole image as one box (the
            DWPose reference); default False gives a frame with no people (comfyui_controlnet_aux).
    Raises:
        PoseModelError: a file is missing or is not the expected kind of model (the message names the file).
    """

    def __init__(self, det_path: str, pose_path: str, providers=None, full_image_fallback: bool = False):
        self.providers = select_providers(providers)
        self.detector = YoloxDetector(det_path, self.providers)
        self.pose = WholebodyPose(pose_path, self.providers)
        self.full_image_fallback = full_image_fallback

    @property
    def active_providers(self) -> list[str]:
        """Providers the two sessions actually run on (a failed CUDA session is retried on CPU)."""
        used = self.detector.session.get_providers() + self.pose.session.get_providers()
        return list(dict.fromkeys(used))

    def detect_pixels(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw stages on one RGB frame, no resizing.

        Returns:
            boxes `(N, 4)` xyxy pixels, box scores `(N,)`, keypoints `(N, 134, 2)` in pixels (OpenPose 134
            layout), keypoint scores `(N, 134)`.
        """
        image_rgb = hwc3(image_rgb)
        boxes, box_scores = self.detector(np.ascontiguousarray(image_rgb[:, :, ::-1]))
        if len(boxes) == 0 and self.full_image_fallback:
            height, width = image_rgb.shape[:2]
            boxes, box_scores = np.array([[0.0, 0.0, width, height]]), np.zeros(1)
        keypoints, scores = self.pose(image_rgb, boxes)
        keypoints, scores = coco_wholebody_to_openpose(keypoints, scores)
        return boxes, box_scores, keypoints, scores

    def detect(self, image: np.ndarray, detect_resolution: int | None = None) -> PoseFrame:
        """Poses of every person in one frame.

        Args:
            image: `(H, W, 3)` uint8 RGB (gray and RGBA are converted as ControlNet's HWC3 does).
            detect_resolution: if set, the frame is first resized with ControlNet's rule (short side to this,
                multiples of 64), as MusePose and MuseV do; None analyses the frame as it is.
        Returns:
            PoseFrame with coordinates normalised to the analysed image and canvas = the input frame's size;
            people in detector-score order.
        """
        image = hwc3(image)
        height, width = image.shape[:2]
        if height == 0 or width == 0:
            raise ValueError(f"empty image of shape {image.shape}")
        analysed = resize_for_detection(image, detect_resolution) if detect_resolution else image
        _, _, keypoints, scores = self.detect_pixels(analysed)
        keypoints = keypoints / np.array([analysed.shape[1], analysed.shape[0]], dtype=np.float64)
        people = [person_from_openpose134(k, s) for k, s in zip(keypoints, scores)]
        return PoseFrame(people=people, width=width, height=height)

    __call__ = detect
