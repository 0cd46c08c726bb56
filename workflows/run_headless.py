"""Run a shipped workflow headless: start ComfyUI on 127.0.0.1, queue the workflow's API twin, save the mp4.

    python workflows/run_headless.py image2video --image photo.jpg --models-dir /path/to/ComfyUI/models
    python workflows/run_headless.py image2video --image photo.jpg --comfyui /path/to/ComfyUI   # your ComfyUI, GPU
    python workflows/run_headless.py pose2video --image character.png --video poses.mp4 --models-dir ...
    python workflows/run_headless.py musepose_pose2video --image character.png --video dance.mp4 --models-dir ...

Which ComfyUI: --comfyui PATH (or $COMFYUI_DIR) runs your own ComfyUI with its own Python (the venv inside it, or
--python); otherwise the host that workflows/demo.sh installs into .host/. The server gets --cpu only when that
Python's torch sees no GPU. Any python3 can start this script: it re-runs itself with ComfyUI's Python.

Models: --models-dir (or $MUSEV_MODELS_DIR) is a ComfyUI models folder that must hold every file the workflow needs
(a missing folder or file is an error naming it, where it was looked for and where to download it). The SD1.5
checkpoint is --checkpoint, or the one checkpoint file in <models-dir>/checkpoints (any name, e.g. a fine-tune such
as majicmixRealv6Fp16). Without --models-dir a TINY DEMO model set with random weights is generated and the workflow
runs at 128x128 px with 4 steps: the video is noise, but every step of the real path runs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

import workflow_graphs  # noqa: E402  (standard library only, like comfy_server)

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
#: MuseV's README recommends these SD1.5 fine-tunes; preferred when a checkpoints folder holds several files
PREFERRED_CHECKPOINTS = (workflow_graphs.SD15_CHECKPOINT, "majicmix", "fantasticmix", "v1-5")
HOST_DIR = os.path.join(REPO, ".host", "comfyui-0.3.75")  # where workflows/demo.sh installs ComfyUI


class UsageError(Exception):
    """A problem with the command line or the model folder, reported without a traceback (exit code 2)."""


def find_checkpoint(models_dir: str, requested: str | None) -> str:
    """The SD1.5 checkpoint to use, relative to `<models_dir>/checkpoints`.

    Args:
        models_dir: a ComfyUI models folder.
        requested: --checkpoint, or None to pick the folder's checkpoint (the only one, else a preferred name).
    Raises:
        UsageError: the folder is missing, the requested file is not in it, it holds no checkpoint, or several
            with none preferred (the message lists them and asks for --checkpoint).
    """
    folder = os.path.join(models_dir, "checkpoints")
    if not os.path.isdir(folder):
        raise UsageError(f"no checkpoints folder in --models-dir: {folder} does not exist (put an SD1.5 checkpoint "
                         f"there, e.g. {workflow_graphs.SD15_CHECKPOINT})")
    found = sorted(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                   for root, _, names in os.walk(folder, followlinks=True) for name in names
                   if name.lower().endswith(CHECKPOINT_EXTENSIONS))
    if requested:
        if requested not in found:
            raise UsageError(f"--checkpoint {requested} is not in {folder} (found: {', '.join(found) or 'nothing'})")
        return requested
    if not found:
        raise UsageError(f"no SD1.5 checkpoint in {folder}: put one there (any SD1.5 fine-tune, e.g. "
                         f"{workflow_graphs.SD15_CHECKPOINT}) or pass --checkpoint")
    if len(found) == 1:
        return found[0]
    for preferred in PREFERRED_CHECKPOINTS:
        matches = [name for name in found if preferred.lower() in os.path.basename(name).lower()]
        if matches:
            return matches[0]
    raise UsageError(f"{folder} holds several checkpoints ({', '.join(found)}): choose one with --checkpoint NAME")


def missing_model_files(models_dir: str, workflow: str) -> list[str]:
    """Lines naming each model file (other than the SD1.5 checkpoint) the workflow needs that `models_dir` lacks."""
    lines = []
    for folder, name in workflow_graphs.GRAPHS[workflow]().models:
        if folder == "checkpoints":
            continue
        path = os.path.join(models_dir, folder, name)
        if not os.path.isfile(path):
            url = workflow_graphs.MODEL_URLS.get((folder, name), "")
            lines.append(f"  {folder}/{name}: not found at {path}" + (f" (download: {url})" if url else ""))
    return lines


def workflow_inputs(workflow: str) -> set[str]:
    """{"image", "video"}: which media inputs (Load Image / Load Video) the workflow has."""
    kinds = {node["type"] for node in workflow_graphs.GRAPHS[workflow]().nodes}
    return {name for name, kind in (("image", "LoadImage"), ("video", "LoadVideo")) if kind in kinds}


def comfyui_python(comfy_dir: str, explicit: str | None = None) -> str:
    """The Python that runs a ComfyUI install: --python, else a venv inside (or beside) it, else this Python."""
    if explicit:
        return explicit
    candidates = [os.path.join(comfy_dir, d, "bin", "python") for d in ("venv", ".venv")]
    candidates += [os.path.join(os.path.dirname(comfy_dir), d, "bin", "python") for d in ("venv", ".venv")]
    candidates += [os.path.join(os.path.dirname(comfy_dir), "python_embeded", "python.exe"),
                   os.path.join(comfy_dir, "venv", "Scripts", "python.exe")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    return sys.executable


def choose_comfyui(args) -> tuple[str | None, str | None]:
    """(ComfyUI folder, its Python): --comfyui / $COMFYUI_DIR, else the host in .host/ (None, None when absent)."""
    comfy = args.comfyui or os.environ.get("COMFYUI_DIR")
    if comfy:
        comfy = os.path.abspath(comfy)
        if not os.path.isfile(os.path.join(comfy, "main.py")):
            raise UsageError(f"--comfyui / COMFYUI_DIR {comfy} is not a ComfyUI folder (no main.py in it)")
        return comfy, comfyui_python(comfy, args.python)
    host = os.path.join(HOST_DIR, "ComfyUI")
    if os.path.isfile(os.path.join(host, "main.py")):
        return host, args.python or os.path.join(HOST_DIR, "venv", "bin", "python")
    return None, None


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", default="image2video", choices=sorted(workflow_graphs.GRAPHS))
    parser.add_argument("--image", help="condition / character image (every Load Image of the workflow)")
    parser.add_argument("--video", help="video for every Load Video of the workflow (pose and video2video workflows)")
    parser.add_argument("--models-dir", default=os.environ.get("MUSEV_MODELS_DIR"),
                        help="a ComfyUI models folder holding the real models (default $MUSEV_MODELS_DIR)")
    parser.add_argument("--checkpoint", help="SD1.5 file in <models-dir>/checkpoints (default: the one there)")
    parser.add_argument("--comfyui", help="your ComfyUI folder (default $COMFYUI_DIR, else the host in .host/)")
    parser.add_argument("--python", help="Python of that ComfyUI (default: its venv/.venv, else this Python)")
    parser.add_argument("--output", default=os.path.join(os.getcwd(), "output"), help="folder for the mp4")
    parser.add_argument("--work", default=os.path.join(HOST_DIR, "demo"), help="scratch folder")
    return parser, parser.parse_args(argv)


def check(args) -> str | None:
    """Everything that can be refused before ComfyUI starts; returns the checkpoint to use (None: demo models)."""
    inputs = workflow_inputs(args.workflow)
    for name in ("image", "video"):
        given = getattr(args, name)
        if given and name not in inputs:
            raise UsageError(f"{args.workflow} has no {name} input (no Load {name.capitalize()} node): "
                             f"drop --{name}" + (f" or use a workflow with one" if name == "video" else ""))
        if name in inputs and not given:
            raise UsageError(f"{args.workflow} needs --{name}")
        if given and not os.path.isfile(given):
            raise UsageError(f"--{name} {given} is not a file")
    if not args.models_dir:
        return None
    if not os.path.isdir(args.models_dir):
        raise UsageError(f"--models-dir {args.models_dir} does not exist (a ComfyUI models folder is expected, "
                         f"holding checkpoints/ and musev/)")
    uses_checkpoint = any(folder == "checkpoints" for folder, _ in workflow_graphs.GRAPHS[args.workflow]().models)
    # "" = real models, no SD1.5 checkpoint needed (MusePose brings its own UNet)
    checkpoint = find_checkpoint(args.models_dir, args.checkpoint) if uses_checkpoint else ""
    missing = missing_model_files(args.models_dir, args.workflow)
    if missing:
        raise UsageError(f"{args.workflow} needs model files that --models-dir {args.models_dir} lacks:\n"
                         + "\n".join(missing) + "\n(README, 'Models', says where each comes from)")
    return checkpoint


def reexec_with(python: str, comfy: str) -> None:
    """Run this script again with ComfyUI's Python (which has torch) and COMFYUI_DIR set."""
    env = dict(os.environ, COMFYUI_DIR=comfy, MUSEV_RUN_HEADLESS_CHILD="1")
    sys.stdout.flush()
    sys.exit(subprocess.call([python, os.path.abspath(__file__)] + sys.argv[1:], env=env))


def main(argv=None) -> int:
    parser, args = parse(argv)
    try:
        checkpoint = check(args)
        comfy, python = choose_comfyui(args)
    except UsageError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if comfy is None:
        parser.exit(2, f"{parser.prog}: error: no ComfyUI found: pass --comfyui PATH (your ComfyUI), set "
                       f"COMFYUI_DIR, or run bash workflows/demo.sh, which installs one into {HOST_DIR}\n")
    # paths, not their targets: a venv's python is a link to the base interpreter but has other packages
    same_python = os.path.abspath(python) == os.path.abspath(sys.executable)
    if not same_python and not os.environ.get("MUSEV_RUN_HEADLESS_CHILD"):
        if not os.path.isfile(python):
            parser.exit(2, f"{parser.prog}: error: the Python of {comfy} was not found ({python}): pass --python\n")
        reexec_with(python, comfy)
    os.environ["COMFYUI_DIR"] = comfy
    return run(args, checkpoint)


def run(args, checkpoint: str | None) -> int:
    import comfy_env
    import comfy_server
    import torch

    with open(os.path.join(REPO, "workflows", f"{args.workflow}_api.json")) as f:
        prompt = json.load(f)
    real = checkpoint is not None
    base = os.path.join(args.work, "base")
    os.makedirs(base, exist_ok=True)
    models_link = os.path.join(base, "models")
    if os.path.islink(models_link):
        os.remove(models_link)
    if real:
        os.symlink(os.path.abspath(args.models_dir), models_link)
        print(f"Using the real models in {args.models_dir} (checkpoint {checkpoint})")
    else:
        if os.path.isdir(models_link):
            shutil.rmtree(models_link)
        print("=" * 78)
        print("TINY DEMO MODELS: no --models-dir given, so a generated tiny model set with RANDOM weights is used")
        print("(the video is noise; it shows the path works). Put the real models in a ComfyUI models folder and")
        print("pass --models-dir to get a real video (see README, 'Models').")
        print("=" * 78)
        comfy_env.bootstrap()
        import tiny_models
        names = tiny_models.ensure_tiny_model_set(models_link, os.path.join(args.work, "tiny_models"))
        checkpoint = names["checkpoint"]
        tiny_models.point_at_tiny_models(prompt, names)
        for node in prompt.values():
            if node["class_type"] in ("ImageScale", "EmptyLatentImage"):
                node["inputs"]["width"] = node["inputs"]["height"] = 128
            if node["class_type"] in ("KSampler", "MuseVParallelDenoiseSampler", "MusePoseSampler"):
                node["inputs"]["steps"] = 4
            if node["class_type"] == "MuseVDWPoseExtract":
                node["inputs"]["resolution"] = node["inputs"]["detect_resolution"] = 128
            if node["class_type"] == "MuseVPoseAlign":
                node["inputs"]["output_height"] = node["inputs"]["width"] = 128
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = checkpoint

    gpu = torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    print(f"ComfyUI: {comfy_env.comfy_dir()} ({'GPU' if gpu else 'CPU only: started with --cpu'})")
    server = comfy_server.ComfyServer(base, cpu=not gpu).start()
    try:
        print(f"ComfyUI is running at {server.url} (log: {server.log_path})")
        for node in prompt.values():
            if node["class_type"] == "LoadImage":
                node["inputs"]["image"] = server.upload_image(args.image)
            if node["class_type"] == "LoadVideo":
                node["inputs"]["file"] = server.upload_image(args.video)
        started = time.time()
        history = server.run(prompt, timeout=24 * 3600)
        if history["status"]["status_str"] != "success":
            print("The workflow failed:", comfy_server.error_message(history))
            return 1
        os.makedirs(args.output, exist_ok=True)
        for item in comfy_server.saved_files(history):
            target = os.path.join(args.output, os.path.basename(item["filename"]))
            with open(target, "wb") as f:
                f.write(server.view(item))
            print(f"Saved {target} ({'tiny demo models' if not real else 'real models'}, "
                  f"{time.time() - started:.0f} s)")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
