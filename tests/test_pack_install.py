"""What a user's install needs: declared dependencies, a pack that loads without OpenCV, no network from onnxruntime."""
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib

from clean_imports import REPO, run_clean

BLOCK = textwrap.dedent("""
    import sys
    class Block:  # makes `import {name}` fail as if the package were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] == '{name}':
                raise ModuleNotFoundError("No module named '{name}'", name='{name}')
    sys.meta_path.insert(0, Block())
""")


def requirement_names(lines):
    return sorted(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())


def test_pyproject_dependencies_are_exactly_requirements_txt():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    with open(os.path.join(REPO, "requirements.txt")) as f:
        required = requirement_names(f.read().splitlines())
    assert requirement_names(project["dependencies"]) == required == ["opencv-python-headless", "safetensors"]


def test_pose_align_imports_without_opencv_and_says_what_to_install():
    code = BLOCK.format(name="cv2") + textwrap.dedent("""
        import numpy as np
        import pose_align
        assert 'cv2' not in sys.modules
        try:
            pose_align.draw_pose(pose_align.PoseFrame([], 64, 64))
        except ModuleNotFoundError as error:
            print(error.name, '|', error)
    """)
    result = run_clean(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cv2 | MuseV's pose nodes need OpenCV: pip install opencv-python-headless"


def test_the_pack_registers_all_its_nodes_without_opencv(comfy):
    """ComfyUI drops a pack whose import fails: without OpenCV all nodes must still load (only pose nodes need it)."""
    code = BLOCK.format(name="cv2") + textwrap.dedent(f"""
        sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
        import comfy_env
        pack = comfy_env.import_pack()
        assert 'cv2' not in sys.modules
        print(sorted(pack.NODE_CLASS_MAPPINGS))
    """)
    result = run_clean(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(sorted(comfy.NODE_CLASS_MAPPINGS))
    assert len(comfy.NODE_CLASS_MAPPINGS) >= 6


PROBE = textwrap.dedent("""
    import os, socket, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    seen = {}
    class Watch:  # records the environment at the moment onnxruntime is first imported
        def find_spec(self, name, path=None, target=None):
            if name == "onnxruntime" and "onnxruntime" not in seen:
                seen["onnxruntime"] = os.environ.get("ORT_DISABLE_TELEMETRY")
    sys.meta_path.insert(0, Watch())
    attempts = []
    def refuse(self, address, *args):  # Python-level connect guard (strace below sees native connects too)
        attempts.append(address)
        raise OSError("network disabled by the test")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    import pose_align, pose_stand_ins
    folder = sys.argv[1]
    detector = pose_align.DWPoseDetector(pose_stand_ins.make_detector(os.path.join(folder, "det.onnx")),
                                         pose_stand_ins.make_pose_blob(os.path.join(folder, "pose.onnx")), "cpu")
    frame = detector.detect(pose_stand_ins.cone_image(), detect_resolution=128)
    print("people", len(frame.people), "telemetry-off-at-import", seen.get("onnxruntime"), "connects", attempts)
""")


def test_an_onnx_session_opened_by_the_pack_makes_no_connection(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ORT_DISABLE_TELEMETRY")}
    command = [sys.executable, "-c", PROBE, str(tmp_path)]
    strace = shutil.which("strace")
    trace = tmp_path / "trace.txt"
    if strace:  # every socket/connect syscall of the process and its threads (onnxruntime's telemetry is native)
        command = [strace, "-f", "-qq", "-e", "trace=socket,connect", "-o", str(trace)] + command
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "people 2 telemetry-off-at-import 1 connects []"
    if strace:
        inet = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
        assert inet == [], inet
