"""Benchmark: time per denoising step and peak memory of MuseV parallel denoising vs video length.

    python bench/bench_windows.py [--frames 24 96 240] [--size 128] [--steps 2] [--device cpu|cuda]

Runs `musev_sample` (what MuseVParallelDenoiseSampler runs) on the thin SD1.5 test model with the same window
settings (12 frames, overlap 4) for each length, each length in a fresh subprocess. Reports seconds per step,
UNet window calls per step, and peak memory above the level measured just before sampling (CPU: resident set
size sampled every 2 ms; CUDA: torch.cuda.max_memory_allocated). Needs $COMFYUI_DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the resident set size in a thread; `peak` is the maximum seen."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def result_of(command: list[str]) -> dict | None:
    """Run one measurement in a fresh process; its `RESULT {json}` line, or None (output printed) if it failed."""
    out = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        print(out.stdout[-3000:], out.stderr[-3000:])
        return None
    return json.loads(lines[-1][len("RESULT "):])


def run_one(frames: int, size: int, steps: int, device: str, models_dir: str) -> dict:
    import torch
    import comfy_env
    comfy_env.bootstrap()
    import comfy.model_management
    import comfy.sd
    import nodes
    import tiny_models
    names = tiny_models.use_tiny_model_set(models_dir, os.path.join(models_dir, ".cache"))
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(
        os.path.join(models_dir, "checkpoints", names["checkpoint"]), output_vae=True, output_clip=True)[:3]
    loader = comfy_env.pack_module("nodes.unet_loader")
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    musev = loader.LoadMuseVUNet().load(model, names["musev_unet"])[0]
    with torch.inference_mode():
        positive = nodes.CLIPTextEncode().encode(clip, "a portrait")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
        condition = torch.randn(1, 4, size // 8, size // 8)
        windows = len(parallel.MuseVContextHandler(1, 12, 4).windows(frames))

        def go(n_steps):
            return parallel.musev_sample(musev, positive, negative, condition, frames, 0, 0, seed=0, steps=n_steps,
                                         cfg=3.5, sampler_name="euler", scheduler="normal", context_frames=12,
                                         context_overlap=4, fuse_method="flat", motion_speed=8.0, w_ind_noise=0.5,
                                         img_weight=0.001, denoise=1.0)

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
    result = {"frames": frames, "windows_per_step": windows, "steps": steps, "seconds_per_step": elapsed / steps,
              "peak_rss_above_start_mb": (meter.peak - before) / 2 ** 20, "device": device,
              "latent": [size // 8, size // 8]}
    if device == "cuda":
        result["peak_cuda_above_start_mb"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    comfy.model_management.unload_all_models()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[24, 96, 240])
    parser.add_argument("--size", type=int, default=128, help="pixels (square)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models-dir", default=os.path.join(REPO, ".host", "bench_models"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(run_one(args.one, args.size, args.steps, args.device, args.models_dir)))
        return 0
    results = []
    for frames in args.frames:
        command = [sys.executable, __file__, "--one", str(frames), "--size", str(args.size), "--steps",
                   str(args.steps), "--device", args.device, "--models-dir", args.models_dir]
        r = result_of(command)
        if r is None:
            return 1
        results.append(r)
        print(f"{r['frames']:4d} frames  {r['windows_per_step']:3d} windows/step  {r['seconds_per_step']:8.2f} s/step  "
              f"peak +{r['peak_rss_above_start_mb']:8.1f} MB RSS"
              + (f"  peak +{r['peak_cuda_above_start_mb']:.1f} MB CUDA" if "peak_cuda_above_start_mb" in r else ""))
    first, last = results[0], results[-1]
    window_ratio = last["windows_per_step"] / first["windows_per_step"]
    time_ratio = last["seconds_per_step"] / first["seconds_per_step"]
    memory_key = "peak_cuda_above_start_mb" if args.device == "cuda" else "peak_rss_above_start_mb"
    memory_ratio = last[memory_key] / max(first[memory_key], 1e-9)
    print(f"time ratio {last['frames']}/{first['frames']} frames: {time_ratio:.2f} "
          f"(window-count ratio {window_ratio:.2f}, {100 * (time_ratio / window_ratio - 1):+.1f}%)")
    print(f"peak memory ratio {last['frames']}/{first['frames']} frames: {memory_ratio:.2f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
