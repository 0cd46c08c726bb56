"""Tiny stand-ins for yolox_l.onnx and dw-ll_ucoco_384.onnx, built with onnx.helper (spec/pose.md §5.1, §5.2).

They have the real models' tensor names, ranks and dtypes (detector `images` f32 [1,3,640,640] -> `output` f32
[1,8400,85]; pose `input` f32 [B,3,384,288] -> `simcc_x` [B,133,576], `simcc_y` [B,133,768]), opset 11,
IR version 7, and outputs chosen so that the expected boxes and keypoints are known exactly:

- detector: a constant table of raw YOLOX rows (plus 0 * mean(input), so the input is used) with the planted
  anchors of DETECTOR_PLANTS; on a 1280x720 frame it yields exactly EXPECTED_BOXES_1280x720.
- pose "const": keypoint k peaks at crop (10 + 2k, 20 + 2k) with 0.9 on both axes, except COCO ears 3, 4
  (0.2) and COCO left eye 1 (0.9 on x, 0.25 on y: invisible under the min rule, visible under a mean rule).
- pose "blob": every keypoint lands on the brightest column and row of the crop (max over channels and the other
  axis, plus a per-keypoint bias, sigmoid); COCO ears get bias -5 and are invisible on a white blob.

Used by tests/test_pose_dwpose.py and bench/bench_pose.py; the files are a few MB and build in well under a second.
"""
from __future__ import annotations

import math
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 11
IR_VERSION = 7
DET_INPUT_HW = (640, 640)
NUM_CLASSES = 80
POSE_INPUT_WH = (288, 384)
POSE_KEYPOINTS = 133
SPLIT = 2

# id: (stride, (gx, gy), (w, h) in letterbox px, objectness, {class: probability})
DETECTOR_PLANTS = {
    "D1": (8, (40, 30), (160, 400), 0.9, {0: 0.95}),     # person, kept
    "D2": (8, (41, 30), (160, 400), 0.8, {0: 0.9}),      # person, suppressed by D1 (IoU ~0.9)
    "D3": (16, (33, 12), (96, 192), 0.7, {0: 0.8}),      # person, kept
    "D4": (16, (5, 30), (64, 64), 0.95, {56: 0.95}),     # chair: dropped by the class filter
    "D5": (32, (2, 2), (64, 64), 0.5, {0: 0.4}),         # person at 0.2: dropped by the 0.3 filter
}
# xyxy and score on a 1280 x 720 (W x H) frame: letterbox r = 0.5
EXPECTED_BOXES_1280x720 = np.array([[480.0, 80.0, 800.0, 880.0], [960.0, 192.0, 1152.0, 576.0]])
EXPECTED_SCORES = np.array([0.9 * 0.95, 0.7 * 0.8])

CONST_PEAK = 0.9
CONST_EXCEPTIONS = {3: (0.2, 0.2), 4: (0.2, 0.2), 1: (0.9, 0.25)}  # COCO index: (x peak, y peak)
BLOB_BIAS_EXCEPTIONS = {3: -5.0, 4: -5.0}


def anchor_row(stride: int, gx: int, gy: int, input_hw=DET_INPUT_HW) -> int:
    offset = 0
    for s in (8, 16, 32):
        cols, rows = input_hw[1] // s, input_hw[0] // s
        if s == stride:
            return offset + gy * cols + gx
        offset += rows * cols
    raise ValueError(stride)


def detector_table(plants=DETECTOR_PLANTS, num_classes=NUM_CLASSES, input_hw=DET_INPUT_HW) -> np.ndarray:
    """`(1, anchors, 5 + num_classes)` float32 raw YOLOX rows: t = (0, 0, ln(w/s), ln(h/s), obj, class probs)."""
    anchors = sum((input_hw[0] // s) * (input_hw[1] // s) for s in (8, 16, 32))
    table = np.zeros((1, anchors, 5 + num_classes), dtype=np.float32)
    for stride, (gx, gy), (w, h), obj, classes in plants.values():
        row = table[0, anchor_row(stride, gx, gy, input_hw)]
        row[2], row[3], row[4] = math.log(w / stride), math.log(h / stride), obj
        for cls, p in classes.items():
            row[5 + cls] = p
    return table


def _save(model, path: str) -> str:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx.save(model, path)
    return path


def _opset():
    return [helper.make_opsetid("", OPSET)]


def make_detector(path: str, plants=DETECTOR_PLANTS, input_shape=(1, 3, 640, 640), num_classes=NUM_CLASSES,
                  input_name="images", output_name="output") -> str:
    """YOLOX stand-in: output = table + 0 * mean(input). `input_shape` may be changed to build wrong files."""
    table = detector_table(plants, num_classes)
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),  # all axes -> scalar
        helper.make_node("Mul", ["mean", "zero"], ["unused"]),
        helper.make_node("Add", ["table", "unused"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "yolox_stand_in",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(table.shape))],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array(0, np.float32), "zero")])
    return _save(helper.make_model(graph, opset_imports=_opset()), path)


def const_simcc() -> tuple[np.ndarray, np.ndarray]:
    """`(1, 133, 576)` and `(1, 133, 768)` float32 peaks of the "const" pose stand-in."""
    simcc_x = np.zeros((1, POSE_KEYPOINTS, POSE_INPUT_WH[0] * SPLIT), np.float32)
    simcc_y = np.zeros((1, POSE_KEYPOINTS, POSE_INPUT_WH[1] * SPLIT), np.float32)
    for k in range(POSE_KEYPOINTS):
        peak_x, peak_y = CONST_EXCEPTIONS.get(k, (CONST_PEAK, CONST_PEAK))
        simcc_x[0, k, SPLIT * (10 + 2 * k)] = peak_x
        simcc_y[0, k, SPLIT * (20 + 2 * k)] = peak_y
    return simcc_x, simcc_y


def const_crop_location(k: int) -> tuple[float, float]:
    """Crop-pixel location of keypoint k in the "const" stand-in."""
    return 10.0 + 2 * k, 20.0 + 2 * k


def _pose_io(batch, input_name="input", keypoints=POSE_KEYPOINTS, lengths=None, names=("simcc_x", "simcc_y"),
             input_type=TensorProto.FLOAT):
    w, h = POSE_INPUT_WH
    lengths = lengths or (w * SPLIT, h * SPLIT)
    inputs = [helper.make_tensor_value_info(input_name, input_type, [batch, 3, h, w])]
    outputs = [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [batch, keypoints, lengths[0]]),
               helper.make_tensor_value_info(names[1], TensorProto.FLOAT, [batch, keypoints, lengths[1]])]
    return inputs, outputs


def make_pose_const(path: str, batch="batch", keypoints=POSE_KEYPOINTS, x_length=None,
                    names=("simcc_x", "simcc_y"), fp16_input: bool = False) -> str:
    """The "const" pose stand-in. batch: "batch" (dynamic) or 1 (static). keypoints / x_length / names may be
    changed to build wrong files; fp16_input gives a float16 input (as comfyui_controlnet_aux's "*fp16*" files)."""
    simcc_x, simcc_y = const_simcc()
    simcc_x, simcc_y = simcc_x[:, :keypoints], simcc_y[:, :keypoints]
    if x_length is not None:
        simcc_x = np.zeros((1, keypoints, x_length), np.float32)
    nodes = [helper.make_node("Cast", ["input"], ["input32"], to=TensorProto.FLOAT)] if fp16_input else []
    nodes += [
        helper.make_node("ReduceMean", ["input32" if fp16_input else "input"], ["mean4"], axes=[1, 2, 3],
                         keepdims=1),                                                        # [B,1,1,1]
        helper.make_node("Reshape", ["mean4", "shape_b11"], ["mean3"]),                     # [B,1,1]
        helper.make_node("Mul", ["mean3", "zero"], ["unused"]),
        helper.make_node("Add", ["peaks_x", "unused"], [names[0]]),
        helper.make_node("Add", ["peaks_y", "unused"], [names[1]]),
    ]
    inputs, outputs = _pose_io(batch, keypoints=keypoints, lengths=(simcc_x.shape[2], simcc_y.shape[2]), names=names,
                               input_type=TensorProto.FLOAT16 if fp16_input else TensorProto.FLOAT)
    graph = helper.make_graph(nodes, "dwpose_const_stand_in", inputs, outputs, [
        numpy_helper.from_array(simcc_x, "peaks_x"), numpy_helper.from_array(simcc_y, "peaks_y"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape_b11"),
        numpy_helper.from_array(np.array(0, np.float32), "zero")])
    return _save(helper.make_model(graph, opset_imports=_opset()), path)


def blob_bias() -> np.ndarray:
    bias = np.zeros((1, POSE_KEYPOINTS, 1), np.float32)
    for k, value in BLOB_BIAS_EXCEPTIONS.items():
        bias[0, k, 0] = value
    return bias


def make_pose_blob(path: str, batch="batch") -> str:
    """The "blob" pose stand-in: per axis, max over channels and the other axis -> + bias[k] -> sigmoid, each
    input column/row repeated into SPLIT bins so that bin 2i and 2i+1 hold the same value (argmax picks 2i)."""
    nodes = []
    for axis_name, reduce_axes, length in (("simcc_x", [1, 2], POSE_INPUT_WH[0]), ("simcc_y", [1, 3],
                                                                                   POSE_INPUT_WH[1])):
        p = axis_name
        nodes += [
            helper.make_node("ReduceMax", ["input"], [p + "_max"], axes=reduce_axes, keepdims=0),  # [B, L]
            helper.make_node("Unsqueeze", [p + "_max"], [p + "_u"], axes=[1]),                      # [B, 1, L]
            helper.make_node("Add", [p + "_u", "bias"], [p + "_b"]),                               # [B, 133, L]
            helper.make_node("Sigmoid", [p + "_b"], [p + "_s"]),
            helper.make_node("Unsqueeze", [p + "_s"], [p + "_s4"], axes=[3]),                       # [B, 133, L, 1]
            helper.make_node("Expand", [p + "_s4", "pair"], [p + "_pair"]),                        # [B, 133, L, 2]
            helper.make_node("Reshape", [p + "_pair", "shape_00m1"], [axis_name]),                 # [B, 133, 2L]
        ]
    inputs, outputs = _pose_io(batch)
    graph = helper.make_graph(nodes, "dwpose_blob_stand_in", inputs, outputs, [
        numpy_helper.from_array(blob_bias(), "bias"),
        numpy_helper.from_array(np.array([1, 1, 1, SPLIT], np.int64), "pair"),
        numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape_00m1")])
    return _save(helper.make_model(graph, opset_imports=_opset()), path)


def cone_image(width: int = 1280, height: int = 720, center=(610, 430), radius: float = 24.0) -> np.ndarray:
    """Black RGB uint8 frame with a white cone 255 * max(0, 1 - d / radius) at `center` (unique argmax)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    value = 255.0 * np.clip(1.0 - np.hypot(xx - center[0], yy - center[1]) / radius, 0.0, None)
    return np.repeat(np.round(value).astype(np.uint8)[:, :, None], 3, axis=2)


def build_all(folder: str) -> dict[str, str]:
    """Every stand-in under `folder`; returns role -> path."""
    return {
        "detector": make_detector(os.path.join(folder, "yolox_l.onnx")),
        "detector_d1": make_detector(os.path.join(folder, "yolox_d1.onnx"), plants={"D1": DETECTOR_PLANTS["D1"]}),
        "pose_const": make_pose_const(os.path.join(folder, "dw-ll_ucoco_384.onnx")),
        "pose_const_static": make_pose_const(os.path.join(folder, "dw-ll_ucoco_384_static.onnx"), batch=1),
        "pose_blob": make_pose_blob(os.path.join(folder, "dw-ll_ucoco_384_blob.onnx")),
    }
