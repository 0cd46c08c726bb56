"""The test-host installer never wipes a folder it did not make, and refuses unknown versions (no install is run)."""
import os
import subprocess

from conftest import REPO

INSTALLER = os.path.join(REPO, ".ci", "install_host.sh")


def _run(*args):
    return subprocess.run(["bash", INSTALLER, *args], capture_output=True, text=True, timeout=60)


def test_installer_leaves_a_foreign_folder_alone(tmp_path):
    own = tmp_path / "my_comfyui"
    (own / "ComfyUI").mkdir(parents=True)
    keep = own / "ComfyUI" / "main.py"
    keep.write_text("# a user's ComfyUI\n")
    result = _run(str(own), "0.3.75")
    assert result.returncode == 1
    assert f"{own} exists and was not made by this script; not touching it." in result.stderr
    assert "COMFYUI_DIR=/path/to/ComfyUI MUSEV_PYTHON=" in result.stderr
    assert keep.read_text() == "# a user's ComfyUI\n"
    assert sorted(os.listdir(own)) == ["ComfyUI"]


def test_installer_refuses_an_unknown_version(tmp_path):
    result = _run(str(tmp_path / "host"), "9.9.9")
    assert result.returncode == 2
    assert "unknown ComfyUI version '9.9.9' (0.3.75 or 0.7.0)" in result.stderr
    assert not (tmp_path / "host").exists()
