"""Benchmark: one MuseV window call at real size (random weights): seconds per call and peak memory.

    python bench/bench_unet_real.py [--flavour musev|musev_referencenet] [--width 128 --height 128]
                                    [--frames 12] [--reps 5] [--device cpu|cuda] [--dtype fp32|fp16|bf16]
                                    [--attention pytorch|default|split|quad|sage|flash] [--variants base ...]

ComfyUI's SD1.5 UNet at full size (ComfyUI's own classes, random weights) plus the full-size MuseV modules (random
weights shaped like MuseV's released file, `../shared/fixtures/checkpoint_keys/keys.json`), attached with the
pack's `build_motion_patcher` + `apply_motion`, called once per rep like a sampler window: B = 2 CFG chunks x
T = 1 condition frame + `--frames` frames, latent `height/8 x width/8`. The referencenet flavour also fuses random
ReferenceNet features and adds 4 random IP tokens. Reported: median seconds per call over `--reps` reps (after one
warm-up call), every rep, and peak memory during the calls (CPU: resident set above the level before the first
call, sampled every 2 ms; CUDA: `max_memory_allocated`). With several `--variants` (see `VARIANTS`), their reps
are interleaved (A B A B ...) on the same models, so a noisy machine affects them alike; the outputs of every
variant are compared with the first (max abs difference). Needs $COMFYUI_DIR.

GPU example: `--device cuda --dtype fp16 --width 512 --height 768`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "tests"))

from bench_windows import PeakRss, rss_bytes  # noqa: E402

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _variant_options(name: str) -> dict:
    """transformer_options entries of a variant (see `VARIANTS`)."""
    return VARIANTS[name]


#: Name -> extra transformer_options for one call. `base` is the pack as it runs in ComfyUI.
VARIANTS = {"base": {}}


def build(flavour: str, dtype_name: str, device: str):
    """The patched full-size MODEL and the reference inputs of a call (None for `musev`)."""
    import torch
    import comfy_env
    import real_size
    dtype = getattr(torch, DTYPES[dtype_name])
    model = real_size.sd15_model_patcher(dtype=dtype, random_weights=True)
    musev_model = comfy_env.pack_module("nodes.musev_model")
    weights = real_size.musev_random_state_dict(flavour)
    motion_patcher, _ = musev_model.build_motion_patcher(model, weights, f"random {flavour}")
    del weights
    return musev_model.apply_motion(model, motion_patcher)


def reference_inputs(flavour: str, width: int, height: int, seed: int = 3):
    """Random ReferenceNet features (13 maps, one reference image) and IP tokens for the referencenet flavour."""
    if flavour != "musev_referencenet":
        return None, None
    import torch
    import comfy_env
    reference = comfy_env.pack_module("musev_core.reference")
    g = torch.Generator().manual_seed(seed)
    h, w = height // 8, width // 8
    sizes = [(320, 1)] * 3 + [(320, 2), (640, 2), (640, 2), (640, 4), (1280, 4), (1280, 4), (1280, 8), (1280, 8),
                               (1280, 8), (1280, 8)]

    def maps():
        return tuple(torch.randn(1, c, 1, -(-h // s), -(-w // s), generator=g) for c, s in sizes)

    features = reference.ReferenceFeatures(cond=maps(), uncond=maps())
    tokens = reference.IPTokens(cond=torch.randn(1, 4, 768, generator=g), uncond=torch.randn(1, 4, 768, generator=g))
    return features, tokens


def run(args) -> dict:
    import real_size
    real_size.bootstrap(args.device, args.attention)
    import torch
    import comfy.model_management
    import comfy_env
    musev_model = comfy_env.pack_module("nodes.musev_model")
    torch.manual_seed(0)
    model = build(args.flavour, args.dtype, args.device)
    features, tokens = reference_inputs(args.flavour, args.width, args.height)
    t = 1 + args.frames
    chunks = 2
    device = comfy.model_management.get_torch_device()
    compute = model.model.manual_cast_dtype or model.model.get_dtype()
    x = torch.randn(chunks * t, 4, args.height // 8, args.width // 8, device=device, dtype=compute)
    timesteps = torch.full((chunks * t,), 500.0, device=device)
    context = torch.randn(chunks, 77, 768).repeat_interleave(t, dim=0).to(device=device, dtype=compute)
    window = musev_model.MuseVWindow(condition_index=[0], frames=list(range(t)), full_length=t,
                                     reference=features, ip_tokens=tokens)
    if features is not None:
        window.reference = features.to(device, compute)

    def call(variant: str):
        window_options = VARIANTS[variant]
        model.model_options["transformer_options"].update(window_options)
        try:
            out = musev_model.unet_call(model, x, timesteps, context, chunks, window)
        finally:
            for key in window_options:
                model.model_options["transformer_options"].pop(key, None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    reference_out = {}
    for variant in args.variants:  # warm-up: model load, first-call allocations, outputs to compare
        reference_out[variant] = call(variant).float().cpu()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times = {v: [] for v in args.variants}
    before = rss_bytes()
    with PeakRss() as meter:
        for _ in range(args.reps):
            for variant in args.variants:
                started = time.perf_counter()
                call(variant)
                times[variant].append(time.perf_counter() - started)
    first = reference_out[args.variants[0]]
    result = {
        "flavour": args.flavour, "device": str(device), "dtype": args.dtype, "attention": args.attention,
        "batch": [chunks, t], "latent": [args.height // 8, args.width // 8], "threads": torch.get_num_threads(),
        "variants": {v: {"median_s": statistics.median(times[v]), "reps_s": [round(s, 3) for s in times[v]],
                         "max_abs_diff_vs_first": float((reference_out[v] - first).abs().max()),
                         "max_rel_diff_vs_first": float((reference_out[v] - first).abs().max()
                                                        / first.abs().max())}
                     for v in args.variants},
        "peak_rss_above_start_mb": (meter.peak - before) / 2 ** 20,
        "finite": bool(torch.isfinite(first).all()),
    }
    if device.type == "cuda":
        result["peak_cuda_above_start_mb"] = (torch.cuda.max_memory_allocated() - base_cuda) / 2 ** 20
        result["peak_cuda_total_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flavour", default="musev", choices=["musev", "musev_referencenet"])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--frames", type=int, default=12, help="generated frames per call (plus 1 condition)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--attention", default="pytorch", choices=["pytorch", "default", "split", "quad", "sage",
                                                                   "flash"])
    parser.add_argument("--variants", nargs="+", default=["base"], choices=list(VARIANTS))
    args = parser.parse_args()
    result = run(args)
    for name, v in result["variants"].items():
        print(f"{name:12s} median {v['median_s']:7.3f} s/call  reps {v['reps_s']}  "
              f"max|diff| vs {args.variants[0]} {v['max_abs_diff_vs_first']:.2e} "
              f"(rel {v['max_rel_diff_vs_first']:.2e})")
    memory = (f"peak CUDA +{result['peak_cuda_above_start_mb']:.0f} MB (total {result['peak_cuda_total_mb']:.0f} MB)"
              if "peak_cuda_above_start_mb" in result else f"peak RSS +{result['peak_rss_above_start_mb']:.0f} MB")
    print(f"{args.flavour} {result['dtype']} on {result['device']} ({result['threads']} threads), B x T = "
          f"{result['batch']}, latent {result['latent']}: {memory}")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
