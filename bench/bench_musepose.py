"""Benchmark: MusePose sampling time per step and peak memory vs video length, and the cost of the reference bank.

    python bench/bench_musepose.py [--frames 24 96 240] [--size 128] [--steps 1] [--context 16 --overlap 4]
                                   [--device cpu|cuda]

Runs `musepose_sample` (what MusePoseSampler runs: MusePose's windows, DDIM, pose padding) on the tiny MusePose
set of the tests (thin SD1.5 geometry, 21 -> 7 motion modules, random weights) with the same window settings for
every length, each run in a fresh subprocess; then the shortest length once more without the reference bank.
Reports seconds per step, UNet window calls per step and peak memory above the level just before sampling (CPU:
resident set size sampled every 2 ms; CUDA: torch.cuda.max_memory_allocated). Needs $COMFYUI_DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "bench"))

from bench_windows import PeakRss, result_of, rss_bytes  # noqa: E402


def run_one(frames: int, size: int, steps: int, context: int, overlap: int, bank: bool, device: str,
            models_dir: str) -> dict:
    import torch
    import comfy_env
    comfy_env.bootstrap()
    import comfy.model_management
    import tiny_models
    names = tiny_models.ensure_tiny_model_set(models_dir, os.path.join(models_dir, ".cache"))
    adapter = comfy_env.pack_module("nodes.musepose_model")
    sampling = comfy_env.pack_module("nodes.musepose_sampling")
    reference_unet = comfy_env.pack_module("nodes.musepose_reference")
    schedule = comfy_env.pack_module("musev_core.musepose.schedule")
    path = lambda kind: os.path.join(models_dir, "musepose", names[f"musepose_{kind}"])
    model, _ = adapter.load_denoising_model(path("denoising_unet"), path("motion_module"), path("pose_guider"))
    generator = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 1, 768, generator=generator)
    positive, negative = [[embeds, {}]], [[torch.zeros_like(embeds), {}]]
    with torch.inference_mode():
        reference = None
        bank_seconds = 0.0
        if bank:
            patcher, _ = reference_unet.load_reference_unet(path("reference_unet"))
            started = time.perf_counter()
            reference = reference_unet.encode_reference(patcher, torch.randn(1, 4, size // 8, size // 8,
                                                                      generator=generator), embeds)
            bank_seconds = time.perf_counter() - started
        pose = torch.rand(frames, size, size, 3, generator=generator)
        features = adapter.pose_features(model, pose)
        padded = frames + schedule.pose_padding(frames, context, overlap)
        windows = len(schedule.musepose_windows(padded, context, overlap))

        def go(n_steps):
            sampler, sigmas = sampling.sampler_and_sigmas(model, sampling.MUSEPOSE_SAMPLER,
                                                          sampling.MUSEPOSE_SCHEDULER, n_steps)
            return sampling.musepose_sample(model, positive, negative, features, reference, 0, sampler, sigmas, 3.5,
                                            context, overlap)

        go(1)  # warm-up: model load, first-call allocations
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        before = rss_bytes()
        with PeakRss() as meter:
            started = time.perf_counter()
            go(steps)
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
    bank_mb = 0.0 if reference is None else sum(t.numel() * t.element_size()
                                                for t in reference.features.values()) / 2 ** 20
    result = {"frames": frames, "padded_frames": padded, "windows_per_step": windows, "steps": steps,
              "seconds_per_step": elapsed / steps, "peak_rss_above_start_mb": (meter.peak - before) / 2 ** 20,
              "bank": bank, "bank_mb": bank_mb, "bank_encode_seconds": bank_seconds, "device": device,
              "latent": [size // 8, size // 8]}
    if device == "cuda":
        result["peak_cuda_above_start_mb"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    comfy.model_management.unload_all_models()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[24, 96, 240])
    parser.add_argument("--size", type=int, default=128, help="pixels (square)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--context", type=int, default=16)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models-dir", default=os.path.join(REPO, ".host", "bench_models"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-bank", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(run_one(args.one, args.size, args.steps, args.context, args.overlap,
                                             not args.no_bank, args.device, args.models_dir)))
        return 0
    results = []
    runs = [(frames, True) for frames in args.frames] + [(min(args.frames), False)]
    for frames, bank in runs:
        command = [sys.executable, __file__, "--one", str(frames), "--size", str(args.size), "--steps",
                   str(args.steps), "--context", str(args.context), "--overlap", str(args.overlap), "--device",
                   args.device, "--models-dir", args.models_dir] + ([] if bank else ["--no-bank"])
        r = result_of(command)
        if r is None:
            return 1
        results.append(r)
        print(f"{r['frames']:4d} frames ({r['padded_frames']} padded) bank={str(bank):5s} "
              f"{r['windows_per_step']:3d} windows/step  {r['seconds_per_step']:8.2f} s/step  "
              f"peak +{r['peak_rss_above_start_mb']:8.1f} MB RSS  bank {r['bank_mb']:.2f} MB "
              f"(encode {r['bank_encode_seconds']:.2f} s)"
              + (f"  peak +{r['peak_cuda_above_start_mb']:.1f} MB CUDA" if "peak_cuda_above_start_mb" in r else ""))
    with_bank = [r for r in results if r["bank"]]
    first, last = with_bank[0], with_bank[-1]
    memory_key = "peak_cuda_above_start_mb" if args.device == "cuda" else "peak_rss_above_start_mb"
    print(f"time ratio {last['frames']}/{first['frames']} frames: {last['seconds_per_step'] / first['seconds_per_step']:.2f} "
          f"(window-count ratio {last['windows_per_step'] / first['windows_per_step']:.2f})")
    print(f"peak memory ratio {last['frames']}/{first['frames']} frames: "
          f"{last[memory_key] / max(first[memory_key], 1e-9):.2f}")
    print(f"bank cost at {first['frames']} frames: {first['seconds_per_step'] / results[-1]['seconds_per_step']:.2f}x "
          f"time per step")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
