"""Benchmark: DWPose extraction and PoseAlign throughput on CPU, without the real weights.

    python bench/bench_pose.py [--repeat 20] [--frames 300]

DWPose runs the whole pipeline (letterbox, detector session, NMS, affine crops, pose session, SimCC decode,
OpenPose conversion) with the tiny stand-in models of tests/pose_stand_ins.py, which have the real tensor
signatures but almost no compute: the numbers measure our pre/post-processing and onnxruntime overhead, not
YOLOX-L (about 155 GFLOPs a frame) or DWPose-l (about 10 GFLOPs a person), which dominate with real weights.
The stand-in detector always finds 2 people, so each frame makes 2 pose crops.

PoseAlign aligns a synthetic 300-frame sequence (one person, body + both hands + face, a few missing points)
in both modes, and renders the aligned frames at MusePose's 444x768 output size.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

import pose_stand_ins  # noqa: E402
from pose_align import (DWPoseDetector, PersonPose, PoseFrame, aligned_output_size, align_pose_sequence,  # noqa: E402
                        draw_pose)


def timed(function, repeat: int) -> float:
    """Seconds per call: one warm-up call, then the best of three means over `repeat` calls."""
    function()
    means = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            function()
        means.append((time.perf_counter() - started) / repeat)
    return min(means)


def synthetic_sequence(frames: int, seed: int = 0) -> tuple[PoseFrame, list[PoseFrame]]:
    rng = np.random.default_rng(seed)
    body = np.array([(.28, .20), (.28, .30), (.20, .30), (.20, .42), (.20, .52), (.36, .30), (.36, .42), (.36, .52),
                     (.24, .60), (.24, .78), (.24, .95), (.32, .60), (.32, .78), (.32, .95), (.26, .18), (.30, .18),
                     (.24, .19), (.32, .19)]) / [0.5625, 1]

    def person(points, missing=0.05):
        return PersonPose(body=points, body_score=(rng.random(18) > missing).astype(float) + np.eye(18)[1],
                          face=points[0] + rng.normal(0, .01, (68, 2)), face_score=np.ones(68),
                          left_hand=points[7] + rng.normal(0, .02, (21, 2)), left_hand_score=np.ones(21),
                          right_hand=points[4] + rng.normal(0, .02, (21, 2)), right_hand_score=np.ones(21))

    ref = PoseFrame([person(body * 1.1, 0.0)], 704, 1216)
    video = [PoseFrame([person(body + rng.normal(0, .01, body.shape))], 720, 1280) for _ in range(frames)]
    return ref, video


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20, help="calls per timing")
    parser.add_argument("--frames", type=int, default=300, help="PoseAlign sequence length")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        models = pose_stand_ins.build_all(folder)
        frame_512 = pose_stand_ins.cone_image(512, 512, center=(220, 300))
        frame_1080p = pose_stand_ins.cone_image(1080, 1920, center=(500, 900))
        for pose_role, label in (("pose_blob", "dynamic batch"), ("pose_const_static", "static batch 1")):
            detector = DWPoseDetector(models["detector"], models[pose_role], providers="cpu")
            seconds = timed(lambda: detector.detect(frame_512), args.repeat)
            rows.append((f"DWPose 512x512 frame, 2 people ({label})", 1.0 / seconds, seconds * 1e3))
        detector = DWPoseDetector(models["detector"], models["pose_blob"], providers="cpu")
        seconds = timed(lambda: detector.detect(frame_1080p, detect_resolution=512), args.repeat)
        rows.append(("DWPose 1080x1920 frame at detect_resolution 512", 1.0 / seconds, seconds * 1e3))
        session = detector.detector.session
        blob = np.zeros((1, 3, 640, 640), np.float32)
        seconds = timed(lambda: session.run(None, {"images": blob}), args.repeat)
        rows.append(("  of which: detector stand-in session.run alone", 1.0 / seconds, seconds * 1e3))

    ref, video = synthetic_sequence(args.frames)
    for mode in ("robust", "compat"):
        seconds = timed(lambda: align_pose_sequence(ref, video, mode=mode), max(1, args.repeat // 10))
        rows.append((f"PoseAlign {args.frames} frames ({mode})", args.frames / seconds, seconds * 1e3 / args.frames))
    aligned, _ = align_pose_sequence(ref, video)
    width, height = aligned_output_size(ref.width, ref.height, 768)
    seconds = timed(lambda: [draw_pose(f, width, height, face=False) for f in aligned], max(1, args.repeat // 10))
    rows.append((f"render {args.frames} aligned frames at {width}x{height} (body + hands)", args.frames / seconds,
                 seconds * 1e3 / args.frames))

    import onnxruntime
    print(f"CPU, {os.cpu_count()} cores, onnxruntime {onnxruntime.__version__}, stand-in models\n")
    print(f"{'what':<62} {'frames/s':>10} {'ms/frame':>10}")
    for what, fps, ms in rows:
        print(f"{what:<62} {fps:>10.1f} {ms:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
