"""Benchmark: a whole MuseV video at real model size (random weights) through the pack's sampler.

    python bench/bench_video_real.py [--flavour musev|musev_referencenet] [--width 128 --height 128]
                                     [--frames 24] [--steps 2] [--device cpu|cuda] [--dtype fp32|fp16|bf16]
                                     [--attention pytorch|default|...]

The full-size random models of `bench_unet_real.py` (ComfyUI's SD1.5 UNet + MuseV's modules) run `musev_sample`
(what MuseV Parallel Denoise Sampler runs: 12-frame windows, overlap 4, one condition frame, CFG 3.5, euler) on
random prompts and a random condition latent, after a one-step warm-up run. Reported: seconds per step, seconds
per generated frame, UNet calls per step, the share of the step time spent outside the UNet calls (slicing conds,
copying hints, fusing windows, the sampler itself; measured with a DIFFUSION_MODEL wrapper timing each call), the
largest tensor bytes reachable from one call's transformer_options, and peak memory (CPU: resident set above the
level before the run, sampled every 2 ms; CUDA: `max_memory_allocated`). Needs $COMFYUI_DIR.

GPU example (the issue's goal: 10 steps in under 30 s): `--device cuda --dtype fp16 --width 512 --height 768
--frames 120 --steps 10`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "tests"))

from bench_unet_real import add_model_arguments, build, cuda_peaks, reference_inputs  # noqa: E402
from bench_windows import PeakRss, rss_bytes  # noqa: E402


def tensor_bytes(value, seen=None) -> int:
    """Bytes of the distinct tensors reachable from dicts, lists, tuples and dataclasses in `value`."""
    import torch
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(tensor_bytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    return 0


class CallTimer:
    """DIFFUSION_MODEL wrapper: wall time and count of the UNet calls, largest transformer_options payload."""

    def __init__(self, cuda: bool):
        self.cuda, self.seconds, self.calls, self.options_bytes = cuda, 0.0, 0, 0

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        import torch
        options = kwargs.get("transformer_options", args[5] if len(args) > 5 else {})
        self.options_bytes = max(self.options_bytes, tensor_bytes(
            {k: v for k, v in options.items() if k not in ("wrappers", "patches", "patches_replace")}))
        if self.cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        out = executor(*args, **kwargs)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return out


def run(args) -> dict:
    import real_size
    real_size.bootstrap(args.device, args.attention)
    import torch
    import comfy.model_management
    import comfy.patcher_extension
    import comfy_env
    parallel = comfy_env.pack_module("nodes.parallel_denoise")
    torch.manual_seed(0)
    model = build(args.flavour, args.dtype, args.device).clone()
    cuda = comfy.model_management.get_torch_device().type == "cuda"
    timer = CallTimer(cuda)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "bench_timer", timer)
    features, tokens = reference_inputs(args.flavour, args.width, args.height)
    g = torch.Generator().manual_seed(4)
    positive = [[torch.randn(1, 77, 768, generator=g), {}]]
    negative = [[torch.randn(1, 77, 768, generator=g), {}]]
    condition = torch.randn(1, 4, args.height // 8, args.width // 8, generator=g)

    def go(steps):
        with torch.inference_mode():
            return parallel.musev_sample(model, positive, negative, condition, args.frames, 0, 0, seed=0, steps=steps,
                                         cfg=3.5, sampler_name="euler", scheduler="normal", context_frames=12,
                                         context_overlap=4, fuse_method="flat", motion_speed=8.0, w_ind_noise=0.5,
                                         img_weight=0.001, denoise=1.0, reference=features, ip_tokens=tokens)

    go(1)  # warm-up: model load, first-call allocations
    timer.seconds, timer.calls = 0.0, 0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    before = rss_bytes()
    with PeakRss() as meter:
        started = time.perf_counter()
        out = go(args.steps)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
    result = {
        "flavour": args.flavour, "device": "cuda" if cuda else "cpu", "dtype": args.dtype,
        "attention": args.attention, "frames": args.frames, "size": [args.width, args.height], "steps": args.steps,
        "threads": torch.get_num_threads(), "seconds_total": elapsed, "seconds_per_step": elapsed / args.steps,
        "seconds_per_frame": elapsed / args.frames, "unet_calls_per_step": timer.calls / args.steps,
        "seconds_per_unet_call": timer.seconds / max(timer.calls, 1),
        "outside_unet_share": (elapsed - timer.seconds) / elapsed,
        "transformer_options_tensor_mb": timer.options_bytes / 2 ** 20,
        "peak_rss_above_start_mb": (meter.peak - before) / 2 ** 20, "finite": bool(torch.isfinite(out).all()),
    }
    if cuda:
        result.update(cuda_peaks(base_cuda))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    r = run(args)
    memory = (f"peak CUDA +{r['peak_cuda_above_start_mb']:.0f} MB (total {r['peak_cuda_total_mb']:.0f} MB)"
              if "peak_cuda_above_start_mb" in r else f"peak RSS +{r['peak_rss_above_start_mb']:.0f} MB")
    print(f"{r['flavour']} {r['dtype']} {r['device']} ({r['threads']} threads) {r['frames']} frames "
          f"{r['size'][0]}x{r['size'][1]}, {r['steps']} steps: {r['seconds_per_step']:.2f} s/step, "
          f"{r['seconds_per_frame']:.2f} s/frame, {r['unet_calls_per_step']:.0f} UNet calls/step "
          f"({r['seconds_per_unet_call']:.2f} s each), outside the UNet {100 * r['outside_unet_share']:.1f}% of the "
          f"time, transformer_options tensors {r['transformer_options_tensor_mb']:.2f} MB, {memory}")
    print("RESULT " + json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
