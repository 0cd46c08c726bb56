"""Benchmark: extra time and peak memory of the musev_referencenet path over the plain musev path.

    python bench/bench_referencenet.py [--frames 24] [--size 128] [--steps 2] [--device cpu|cuda]

Both variants run on the thin SD1.5 test model with the same settings (12-frame windows, overlap 4), each in a
fresh subprocess:
- `musev`: LoadMuseVUNet(musev) -> musev_sample.
- `referencenet`: LoadMuseVUNet(musev_referencenet) -> MuseV IP-Adapter Embed (tiny CLIP ViT-L, fp8 file) ->
  MuseV ReferenceNet Encode -> musev_sample with reference features and IP tokens.
Reported: seconds per step; peak memory during sampling above the level just before it (fusion attention, IP
attention, per-call features); peak memory of the whole pipeline above the level after the SD checkpoint is loaded
(adds the motion modules, the ReferenceNet and the CLIP vision model). CPU: resident set size sampled every 2 ms;
CUDA: torch.cuda.max_memory_allocated. Needs $COMFYUI_DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_windows import PeakRss, result_of, rss_bytes  # noqa: E402


def run_one(variant: str, frames: int, size: int, steps: int, device: str, models_dir: str) -> dict:
    import torch
    import comfy_env
    comfy_env.bootstrap()
    import comfy.clip_vision
    import comfy.model_management
    import comfy.sd
    import nodes
    import tiny_models
    names = tiny_models.use_tiny_model_set(models_dir, os.path.join(models_dir, ".cache"))
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(
        os.path.join(models_dir, "checkpoints", names["checkpoint"]), output_vae=True, output_clip=True)[:3]
    loader = comfy_env.pack_module("nodes.unet_loader").LoadMuseVUNet()
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    ref_nodes = comfy_env.pack_module("nodes.reference_nodes")

    def cuda_now():
        return torch.cuda.memory_allocated() if device == "cuda" else 0

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start_rss, start_cuda = rss_bytes(), cuda_now()
    with torch.inference_mode(), PeakRss() as whole:
        positive = nodes.CLIPTextEncode().encode(clip, "a portrait")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
        image = torch.rand(1, size, size, 3)
        condition = vae.encode(image)
        reference = tokens = None
        if variant == "referencenet":
            musev = loader.load(model, names["referencenet_unet"])[0]
            clip_vision = comfy.clip_vision.load(os.path.join(models_dir, "clip_vision", names["clip_vision"]))
            tokens = ref_nodes.MuseVIPAdapterEmbed().embed(clip_vision, image, names["image_proj"], 1.0, "center")[0]
            reference = ref_nodes.MuseVReferenceNetEncode().encode(names["referencenet"], vae, image,
                                                                   ip_tokens=tokens)[0]
        else:
            musev = loader.load(model, names["musev_unet"])[0]

        def go(n_steps):
            return parallel.musev_sample(musev, positive, negative, condition, frames, 0, 0, seed=0, steps=n_steps,
                                         cfg=3.5, sampler_name="euler", scheduler="normal", context_frames=12,
                                         context_overlap=4, fuse_method="flat", motion_speed=8.0, w_ind_noise=0.5,
                                         img_weight=0.001, denoise=1.0, reference=reference, ip_tokens=tokens)

        go(1)  # warm-up: model load, first-call allocations
        if device == "cuda":
            torch.cuda.synchronize()
            whole_cuda_peak = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        before_rss, before_cuda = rss_bytes(), cuda_now()
        with PeakRss() as sampling:
            started = time.perf_counter()
            go(steps)
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
    result = {"variant": variant, "frames": frames, "steps": steps, "seconds_per_step": elapsed / steps,
              "sampling_peak_rss_mb": (sampling.peak - before_rss) / 2 ** 20,
              "pipeline_peak_rss_mb": (whole.peak - start_rss) / 2 ** 20, "device": device,
              "latent": [size // 8, size // 8]}
    if device == "cuda":
        result["sampling_peak_cuda_mb"] = (torch.cuda.max_memory_allocated() - before_cuda) / 2 ** 20
        result["pipeline_peak_cuda_mb"] = (max(whole_cuda_peak, torch.cuda.max_memory_allocated())
                                           - start_cuda) / 2 ** 20
    comfy.model_management.unload_all_models()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="pixels (square)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models-dir", default=os.path.join(REPO, ".host", "bench_models"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.frames, args.size, args.steps, args.device,
                                             args.models_dir)))
        return 0
    results = {}
    for variant in ("musev", "referencenet"):
        command = [sys.executable, __file__, "--one", variant, "--frames", str(args.frames), "--size", str(args.size),
                   "--steps", str(args.steps), "--device", args.device, "--models-dir", args.models_dir]
        r = results[variant] = result_of(command)
        if r is None:
            return 1
        print(f"{variant:13s} {r['seconds_per_step']:7.2f} s/step  sampling peak +{r['sampling_peak_rss_mb']:7.1f} MB "
              f"RSS  pipeline peak +{r['pipeline_peak_rss_mb']:7.1f} MB RSS"
              + (f"  CUDA sampling +{r['sampling_peak_cuda_mb']:.1f} MB pipeline +{r['pipeline_peak_cuda_mb']:.1f} MB"
                 if "sampling_peak_cuda_mb" in r else ""))
    plain, ref = results["musev"], results["referencenet"]
    print(f"referencenet path: {ref['seconds_per_step'] / plain['seconds_per_step']:.2f}x time per step, "
          f"{ref['sampling_peak_rss_mb'] - plain['sampling_peak_rss_mb']:+.1f} MB sampling peak, "
          f"{ref['pipeline_peak_rss_mb'] - plain['pipeline_peak_rss_mb']:+.1f} MB pipeline peak (RSS)")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
