"""Run a shipped workflow headless: start ComfyUI on 127.0.0.1, queue the workflow's API twin, save the mp4.

    python workflows/run_headless.py image2video --image photo.jpg [--models-dir /path/to/ComfyUI/models]
    python workflows/run_headless.py pose2video --image character.png --video poses.mp4
    python workflows/run_headless.py musepose_pose2video --image character.png --video dance.mp4

With the real models in `--models-dir` (models/checkpoints/v1-5-pruned-emaonly-fp16.safetensors or --checkpoint,
models/musev/musev/unet/diffusion_pytorch_model.safetensors; for MusePose the four files in models/musepose/)
it runs the workflow as shipped. Without them it
generates a TINY DEMO model set (random weights: the video is noise) and runs at 128x128 px with 4 steps, to show
the whole path works. Needs $COMFYUI_DIR (workflows/demo.sh sets everything up).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

import comfy_env  # noqa: E402
import comfy_server  # noqa: E402
import workflow_graphs  # noqa: E402


def real_models_present(models_dir: str | None, checkpoint: str, workflow: str = "image2video") -> bool:
    if not models_dir:
        return False
    if workflow.startswith("musepose"):
        return all(os.path.isfile(os.path.join(models_dir, "musepose", name))
                   for name in workflow_graphs.MUSEPOSE_FILES.values())
    return (os.path.isfile(os.path.join(models_dir, "checkpoints", checkpoint))
            and os.path.isfile(os.path.join(models_dir, "musev", workflow_graphs.MUSEV_UNET)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", default="image2video", choices=sorted(workflow_graphs.GRAPHS))
    parser.add_argument("--image", help="condition / character image (every Load Image of the workflow)")
    parser.add_argument("--video", help="video for every Load Video of the workflow (pose and video2video workflows)")
    parser.add_argument("--models-dir", default=os.environ.get("MUSEV_MODELS_DIR"),
                        help="a ComfyUI models folder holding the real models")
    parser.add_argument("--checkpoint", default=workflow_graphs.SD15_CHECKPOINT, help="SD1.5 file in checkpoints/")
    parser.add_argument("--output", default=os.path.join(os.getcwd(), "output"), help="folder for the mp4")
    parser.add_argument("--work", default=os.path.join(REPO, ".host", "demo"), help="scratch folder")
    args = parser.parse_args()

    with open(os.path.join(REPO, "workflows", f"{args.workflow}_api.json")) as f:
        prompt = json.load(f)
    real = real_models_present(args.models_dir, args.checkpoint, args.workflow)
    base = os.path.join(args.work, "base")
    os.makedirs(base, exist_ok=True)
    models_link = os.path.join(base, "models")
    if os.path.islink(models_link):
        os.remove(models_link)
    if real:
        os.symlink(os.path.abspath(args.models_dir), models_link)
        print(f"Using the real models in {args.models_dir}")
    else:
        if os.path.isdir(models_link):
            shutil.rmtree(models_link)
        print("=" * 78)
        print("TINY DEMO MODELS: no real SD1.5 + MuseV models found, so a generated tiny model set with RANDOM")
        print("weights is used (the video is noise; it shows the path works). Put the real models in a ComfyUI")
        print("models folder and pass --models-dir to get a real video (see README, 'Models').")
        print("=" * 78)
        comfy_env.bootstrap()
        import tiny_models
        names = tiny_models.ensure_tiny_model_set(models_link, os.path.join(args.work, "tiny_models"))
        args.checkpoint = names["checkpoint"]
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
            node["inputs"]["ckpt_name"] = args.checkpoint

    server = comfy_server.ComfyServer(base).start()
    try:
        print(f"ComfyUI is running at {server.url} (log: {server.log_path})")
        for node in prompt.values():
            if node["class_type"] == "LoadImage":
                if not args.image:
                    parser.error(f"{args.workflow} needs --image")
                node["inputs"]["image"] = server.upload_image(args.image)
            if node["class_type"] == "LoadVideo":
                if not args.video:
                    parser.error(f"{args.workflow} needs --video")
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
