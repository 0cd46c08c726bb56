"""workflows/run_headless.py as a user runs it: refusals before ComfyUI starts, checkpoint by any name, --help."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from clean_imports import REPO

SCRIPT = os.path.join(REPO, "workflows", "run_headless.py")


def headless():
    spec = importlib.util.spec_from_file_location("run_headless_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, env=None):
    """The script with a plain interpreter, outside the repository, without the host's environment."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COMFYUI_DIR", "MUSEV_MODELS_DIR")}
    clean.update(env or {})
    return subprocess.run([sys.executable, SCRIPT, *args], cwd="/", env=clean, capture_output=True, text=True,
                          timeout=120)


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return path


@pytest.fixture
def image(tmp_path):
    return touch(str(tmp_path / "photo.jpg"))


def test_help_works_without_comfyui_or_its_python():
    plain = shutil.which("python3") or sys.executable  # the system Python (no torch) where there is one
    result = subprocess.run([plain, SCRIPT, "--help"], cwd="/", capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 0, result.stderr
    assert "--comfyui" in result.stdout and "--models-dir" in result.stdout and "--checkpoint" in result.stdout


def test_a_models_dir_that_does_not_exist_is_an_error_not_the_demo_models(tmp_path, image):
    missing = str(tmp_path / "nope")
    result = run("image2video", "--image", image, "--models-dir", missing)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"error: --models-dir {missing} does not exist (a ComfyUI models folder "
                                          f"is expected, holding checkpoints/ and musev/)")
    assert "TINY DEMO" not in result.stdout


def test_missing_model_files_are_named_with_where_they_were_looked_for(tmp_path, image):
    models = tmp_path / "models"
    touch(str(models / "checkpoints" / "majicmixRealv6Fp16.safetensors"))
    result = run("image2video", "--image", image, "--models-dir", str(models))
    assert result.returncode == 2
    expected = os.path.join(str(models), "musev", "musev/unet/diffusion_pytorch_model.bin")
    assert (f"image2video needs model files that --models-dir {models} lacks:\n"
            f"  musev/musev/unet/diffusion_pytorch_model.bin: not found at {expected} (download: https://"
            f"huggingface.co/TMElyralab/MuseV/resolve/main/motion/musev/unet/diffusion_pytorch_model.bin)"
            ) in result.stderr


def test_the_checkpoint_is_found_by_whatever_name_the_folder_holds(tmp_path):
    module = headless()
    models = str(tmp_path / "models")
    with pytest.raises(module.UsageError, match="no checkpoints folder in --models-dir"):
        module.find_checkpoint(models, None)
    touch(os.path.join(models, "checkpoints", "majicmixRealv6Fp16.safetensors"))
    assert module.find_checkpoint(models, None) == "majicmixRealv6Fp16.safetensors"
    touch(os.path.join(models, "checkpoints", "sd15", "other_finetune.safetensors"))
    assert module.find_checkpoint(models, None) == "majicmixRealv6Fp16.safetensors"  # MuseV's recommendation first
    assert module.find_checkpoint(models, "sd15/other_finetune.safetensors") == "sd15/other_finetune.safetensors"
    with pytest.raises(module.UsageError, match=r"--checkpoint absent.safetensors is not in .*checkpoints \(found: "
                                                r"majicmixRealv6Fp16.safetensors, sd15/other_finetune"):
        module.find_checkpoint(models, "absent.safetensors")
    touch(os.path.join(models, "checkpoints", "third.ckpt"))
    os.remove(os.path.join(models, "checkpoints", "majicmixRealv6Fp16.safetensors"))
    with pytest.raises(module.UsageError, match=r"holds several checkpoints \(sd15/other_finetune.safetensors, "
                                                r"third.ckpt\): choose one with --checkpoint NAME"):
        module.find_checkpoint(models, None)


def test_all_real_model_files_present_passes_the_checks(tmp_path, image):
    module = headless()
    models = tmp_path / "models"
    touch(str(models / "checkpoints" / "fantasticmix_v10.safetensors"))
    for folder, name in module.workflow_graphs.GRAPHS["image2video_referencenet"]().models:
        if folder != "checkpoints":
            touch(str(models / folder / name))
    _, args = module.parse(["image2video_referencenet", "--image", image, "--models-dir", str(models)])
    assert module.check(args) == "fantasticmix_v10.safetensors"


@pytest.mark.parametrize("workflow, flag, message", [
    ("video2video", "--image", "video2video has no image input (no Load Image node): drop --image"),
    ("image2video", "--video", "image2video has no video input (no Load Video node): drop --video or use a workflow "
                               "with one")])
def test_media_flags_a_workflow_cannot_use_are_refused(tmp_path, image, workflow, flag, message):
    video = touch(str(tmp_path / "clip.mp4"))
    args = [workflow, "--image", image, "--video", video] if flag == "--video" else [workflow, flag, image,
                                                                                    "--video", video]
    result = run(*args)
    assert result.returncode == 2 and result.stderr.strip().endswith(f"error: {message}"), result.stderr


def test_the_users_comfyui_runs_with_its_own_python(tmp_path):
    module = headless()
    comfy = tmp_path / "ComfyUI"
    touch(str(comfy / "main.py"))
    python = touch(str(comfy / "venv" / "bin" / "python"))
    _, args = module.parse(["--comfyui", str(comfy)])
    assert module.choose_comfyui(args) == (str(comfy), python)
    _, args = module.parse(["--comfyui", str(tmp_path)])
    with pytest.raises(module.UsageError, match="is not a ComfyUI folder"):
        module.choose_comfyui(args)


def test_any_python_hands_over_to_the_comfyui_python(tmp_path, image):
    """Started by a Python without torch, the script re-runs itself with the ComfyUI's own Python."""
    comfy = tmp_path / "ComfyUI"
    touch(str(comfy / "main.py"))
    python = comfy / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "child COMFYUI_DIR=$COMFYUI_DIR args=$*"\n')
    python.chmod(0o755)
    result = run("image2video", "--image", image, "--comfyui", str(comfy))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"child COMFYUI_DIR={comfy} args={SCRIPT} image2video --image {image} "
                                     f"--comfyui {comfy}")
