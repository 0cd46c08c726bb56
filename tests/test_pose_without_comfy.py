"""pose_align must import and run with ComfyUI absent (DESIGN.md principle 5), and without onnxruntime until a
model is opened."""
from clean_imports import COMFY_MODULES, absolute_imports, run_clean

FORBIDDEN = COMFY_MODULES | {"torch"}


def test_no_comfy_or_torch_imports_in_pose_align_sources():
    for name, module in absolute_imports("pose_align"):
        assert module.split(".")[0] not in FORBIDDEN, (name, module)


def test_pose_align_imports_and_works_in_a_clean_interpreter():
    code = (
        "import sys\n"
        "import pose_align\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported at import time'\n"
        "from pose_align import PersonPose, PoseFrame, align_pose_sequence, draw_pose, to_pose_keypoint\n"
        "import numpy as np\n"
        "body = np.array([[.5, .2], [.5, .3], [.4, .3], [.4, .45], [.4, .6], [.6, .3], [.6, .45], [.6, .6],\n"
        "                 [.45, .6], [.45, .8], [.45, .95], [.55, .6], [.55, .8], [.55, .95], [.48, .18],\n"
        "                 [.52, .18], [.46, .19], [.54, .19]])\n"
        "frame = PoseFrame([PersonPose(body=body, body_score=np.ones(18))], 256, 512)\n"
        "aligned, report = align_pose_sequence(frame, [frame, frame])\n"
        "assert np.allclose(aligned[1].people[0].body, body) and report.scales['neck'] == 1.0\n"
        "image = draw_pose(aligned[0])\n"
        "assert image.shape == (512, 256, 3) and tuple(image[int(.3 * 512), int(.45 * 256)]) == (153, 0, 0)\n"
        "assert len(to_pose_keypoint(aligned[0])['people'][0]['pose_keypoints_2d']) == 54\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'comfy_extras', 'torch')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = run_clean(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_pose_align_imports_without_onnxruntime_installed():
    # a meta-path blocker makes `import onnxruntime` fail as if it were not installed
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'onnxruntime':\n"
        "            raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pose_align\n"
        "try:\n"
        "    pose_align.DWPoseDetector('yolox_l.onnx', 'dw-ll_ucoco_384.onnx')\n"
        "except ModuleNotFoundError as error:\n"
        "    print('needs', error.name)\n"
    )
    result = run_clean(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "needs onnxruntime"
