"""Benchmark: one MuseV window call at real size (random weights): seconds per call and peak memory.

    python bench/bench_unet_real.py [--flavour musev|musev_referencenet] [--width 128 --height 128]
                                    [--frames 12] [--reps 5] [--device cpu|cuda] [--dtype fp32|fp16|bf16]
                                    [--attention pytorch|default|split|quad|sage|flash] [--baseline DIR]
                                    [--temporal-weight W]

ComfyUI's SD1.5 UNet at full size (ComfyUI's own classes, random weights) plus the full-size MuseV modules (random
weights shaped like MuseV's released file, `../shared/fixtures/checkpoint_keys/keys.json`), attached with the
pack's `build_motion_patcher` + `apply_motion`, called once per rep like a sampler window: B = 2 CFG chunks x
T = 1 condition frame + `--frames` frames, latent `height/8 x width/8`. The referencenet flavour also fuses random
ReferenceNet features and adds 4 random IP tokens. Reported: median seconds per call over `--reps` reps (after one
warm-up call), every rep, and peak memory of the calls, warm-up included (CPU: resident set above the level with
the models loaded, sampled every 2 ms; CUDA: `max_memory_allocated`). Needs $COMFYUI_DIR.

`--baseline DIR` times another checkout of this pack (e.g. `git worktree add /tmp/base <commit>`) against this one:
each gets its own copy of the same random models, their reps are interleaved (baseline, current, baseline, ...)
so a noisy machine affects both alike, and the current output is compared with the baseline's (max abs and
relative difference). `--temporal-weight` sets every MuseV `temporal_weight` (default 1: the temporal modules then
change the output as much as the spatial ones, so the comparison sees their numerics; 1e-5 is MuseV's initial value).

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


BASELINE_PACK = "comfyui_musev_pack_baseline"


def pack_adapter(root: str | None = None):
    """`nodes.musev_model` of this checkout, or of the pack checkout at `root` (imported under its own name)."""
    import importlib
    import importlib.util
    import comfy_env
    if root is None:
        return comfy_env.pack_module("nodes.musev_model")
    if BASELINE_PACK not in sys.modules:
        root = os.path.abspath(root)
        spec = importlib.util.spec_from_file_location(BASELINE_PACK, os.path.join(root, "__init__.py"),
                                                      submodule_search_locations=[root])
        module = importlib.util.module_from_spec(spec)
        sys.modules[BASELINE_PACK] = module
        spec.loader.exec_module(module)
    return importlib.import_module(BASELINE_PACK + ".nodes.musev_model")


def build(flavour: str, dtype_name: str, device: str, musev_model=None, temporal_weight: float | None = None):
    """The full-size MODEL with MuseV applied by `musev_model` (default: this checkout's adapter).

    `temporal_weight` replaces every MuseV `temporal_weight` (None keeps 1e-5, MuseV's initial value).
    """
    import torch
    import real_size
    dtype = getattr(torch, DTYPES[dtype_name])
    model = real_size.sd15_model_patcher(dtype=dtype, random_weights=True)
    musev_model = musev_model or pack_adapter()
    weights = real_size.musev_random_state_dict(flavour)
    if temporal_weight is not None:
        for key in weights:
            if key.endswith("temporal_weight"):
                weights[key].fill_(temporal_weight)
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
    variants = {}
    if args.baseline:
        variants["baseline"] = pack_adapter(args.baseline)
    variants["current"] = pack_adapter()
    models = {}
    for name, adapter in variants.items():
        torch.manual_seed(0)
        models[name] = build(args.flavour, args.dtype, args.device, adapter, args.temporal_weight)
    features, tokens = reference_inputs(args.flavour, args.width, args.height)
    t = 1 + args.frames
    chunks = 2
    device = comfy.model_management.get_torch_device()
    first = models["current"].model
    compute = first.manual_cast_dtype or first.get_dtype()
    x = torch.randn(chunks * t, 4, args.height // 8, args.width // 8, device=device, dtype=compute)
    timesteps = torch.full((chunks * t,), 500.0, device=device)
    context = torch.randn(chunks, 77, 768).repeat_interleave(t, dim=0).to(device=device, dtype=compute)
    if features is not None:
        features = features.to(device, compute)

    def call(name: str):
        adapter = variants[name]
        window = adapter.MuseVWindow(condition_index=[0], frames=list(range(t)), full_length=t,
                                     reference=features, ip_tokens=tokens)
        out = adapter.unet_call(models[name], x, timesteps, context, chunks, window)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times = {name: [] for name in variants}
    before = rss_bytes()  # the models are loaded; the calls' own memory comes on top
    with PeakRss() as meter:
        outputs = {name: call(name).float().cpu() for name in variants}  # warm-up; outputs to compare
        for _ in range(args.reps):
            for name in variants:
                started = time.perf_counter()
                call(name)
                times[name].append(time.perf_counter() - started)
    reference = outputs["baseline" if "baseline" in outputs else "current"]
    result = {
        "flavour": args.flavour, "device": str(device), "dtype": args.dtype, "attention": args.attention,
        "batch": [chunks, t], "latent": [args.height // 8, args.width // 8], "threads": torch.get_num_threads(),
        "temporal_weight": args.temporal_weight,
        "variants": {name: {"median_s": statistics.median(times[name]), "reps_s": [round(s, 3) for s in times[name]],
                            "max_abs_diff_vs_baseline": float((outputs[name] - reference).abs().max()),
                            "max_rel_diff_vs_baseline": float((outputs[name] - reference).abs().max()
                                                              / reference.abs().max())}
                     for name in variants},
        "peak_rss_above_start_mb": (meter.peak - before) / 2 ** 20,
        "finite": bool(torch.isfinite(outputs["current"]).all()),
    }
    if "baseline" in variants:
        result["current_over_baseline"] = (result["variants"]["current"]["median_s"]
                                           / result["variants"]["baseline"]["median_s"])
        pairs = [c / b for b, c in zip(times["baseline"], times["current"])]
        result["per_rep_ratio"] = [round(r, 3) for r in pairs]
    if device.type == "cuda":
        result.update(cuda_peaks(base_cuda))
    return result


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both real-size benchmarks share: model flavour, size, device, dtype, attention backend."""
    parser.add_argument("--flavour", default="musev", choices=["musev", "musev_referencenet"])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--attention", default="pytorch", choices=["pytorch", "default", "split", "quad", "sage",
                                                                   "flash"])


def cuda_peaks(base_cuda: int) -> dict:
    """Peak CUDA memory since the last reset: above `base_cuda` bytes and in total, in MB."""
    import torch
    peak = torch.cuda.max_memory_allocated()
    return {"peak_cuda_above_start_mb": (peak - base_cuda) / 2 ** 20, "peak_cuda_total_mb": peak / 2 ** 20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--frames", type=int, default=12, help="generated frames per call (plus 1 condition)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--baseline", help="another checkout of this pack to time against this one")
    parser.add_argument("--temporal-weight", type=float, default=1.0,
                        help="value of every MuseV temporal_weight (MuseV's initial value is 1e-5)")
    args = parser.parse_args()
    result = run(args)
    for name, v in result["variants"].items():
        print(f"{name:9s} median {v['median_s']:7.3f} s/call  reps {v['reps_s']}  "
              f"max|diff| vs baseline {v['max_abs_diff_vs_baseline']:.2e} (rel {v['max_rel_diff_vs_baseline']:.2e})")
    if "current_over_baseline" in result:
        print(f"current / baseline: {result['current_over_baseline']:.3f} (per rep {result['per_rep_ratio']})")
    memory = (f"peak CUDA +{result['peak_cuda_above_start_mb']:.0f} MB (total {result['peak_cuda_total_mb']:.0f} MB)"
              if "peak_cuda_above_start_mb" in result else f"peak RSS +{result['peak_rss_above_start_mb']:.0f} MB")
    print(f"{args.flavour} {result['dtype']} on {result['device']} ({result['threads']} threads), B x T = "
          f"{result['batch']}, latent {result['latent']}: {memory}")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
