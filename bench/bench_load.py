"""Benchmark: load time and peak memory of the pack's model loads at full size (random weights).

    python bench/bench_load.py [--kinds musev musev_referencenet referencenet image_proj]
                               [--formats fp16.safetensors fp16.bin fp32.safetensors fp32.bin] [--workdir /tmp/x]

For each file kind and format, a full-size file of random weights shaped like MuseV's released file
(`../shared/fixtures/checkpoint_keys/keys.json`) is written to a temporary folder outside the repository, loaded
by the node's load path in a fresh process, and deleted before the next one (one file on disk at a time):
- `musev`, `musev_referencenet`: `LoadMuseVUNet.load` onto a full-size ComfyUI SD1.5 MODEL (its UNet memory is
  allocated but never touched, so it adds nothing to the resident set);
- `referencenet`: the ReferenceNet Encode node's load (`build_referencenet_patcher` from the file);
- `image_proj`: `load_image_projection` (MuseV's `ip_adapter_image_proj.bin` layout, nested under `image_proj`).
Reported per load: seconds, peak resident-set increase over the level just before the load (sampled every 2 ms),
the bytes of the tensors the loaded model keeps, and their ratio (bar: <= 1.3). Needs $COMFYUI_DIR. Writes up to
~5.7 GB (fp32 musev) to the work folder: check free disk space first.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, BENCH)

from bench_windows import PeakRss, result_of, rss_bytes  # noqa: E402

KINDS = ("musev", "musev_referencenet", "referencenet", "image_proj")
FORMATS = ("fp16.safetensors", "fp16.bin", "fp32.safetensors", "fp32.bin")


def _kept_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def run_one(kind: str, path: str, model_dtype: str | None) -> dict:
    import torch
    import comfy_env
    comfy_env.bootstrap()
    import folder_paths
    import real_size
    folder, name = os.path.split(path)
    folder_paths.folder_names_and_paths["musev"] = ([folder], {".safetensors", ".bin"})
    dtype = getattr(torch, model_dtype) if model_dtype else None
    if kind in ("musev", "musev_referencenet"):
        model = real_size.sd15_model_patcher(dtype=dtype)
        node = comfy_env.pack_module("nodes.unet_loader").LoadMuseVUNet()
        musev_model = comfy_env.pack_module("nodes.musev_model")

        def load():
            patched = node.load(model, name)[0]
            return patched.get_additional_models_with_key(musev_model.KEY)[0].model
    elif kind == "referencenet":
        reference_nodes = comfy_env.pack_module("nodes.reference_nodes")

        def load():
            return reference_nodes._load_referencenet(path, name).model
    else:
        reference = comfy_env.pack_module("musev_core.reference")

        def load():
            return reference.load_image_projection(path, name)
    _warm_up(os.path.dirname(path))
    before = rss_bytes()
    with PeakRss() as meter:
        started = time.perf_counter()
        module = load()
        elapsed = time.perf_counter() - started
    kept = _kept_bytes(module)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in module.parameters()})
    return {"kind": kind, "file": name, "file_mb": os.path.getsize(path) / 2 ** 20, "seconds": elapsed,
            "peak_increase_mb": (meter.peak - before) / 2 ** 20, "kept_mb": kept / 2 ** 20,
            "ratio": (meter.peak - before) / kept, "kept_dtypes": dtypes,
            "after_increase_mb": (rss_bytes() - before) / 2 ** 20}


def _warm_up(folder: str) -> None:
    """Run the read path once on a one-tensor file so first-use allocations (kernels, arenas) are not counted."""
    import torch
    import safetensors.torch
    checkpoint = __import__("comfy_env").pack_module("musev_core.checkpoint")
    path = os.path.join(folder, "warm_up.safetensors")
    safetensors.torch.save_file({"w": torch.ones(64, 64, dtype=torch.float16)}, path)
    with checkpoint.CheckpointFile(path) as f:
        f.read(["w"], dtype=torch.float32)
    os.remove(path)


def write_file(kind: str, fmt: str, folder: str) -> str:
    import torch
    import real_size
    dtype = {"fp16": torch.float16, "fp32": torch.float32}[fmt.split(".")[0]]
    suffix = "." + fmt.split(".")[1]
    shapes = real_size.IMAGE_PROJ_SHAPES if kind == "image_proj" else real_size.released_shapes()[kind]
    path = os.path.join(folder, f"{kind}_{fmt.replace('.', '_')}{suffix}")
    if kind == "image_proj":
        path = os.path.join(folder, f"ip_adapter_image_proj_{fmt.split('.')[0]}{suffix}")
    if suffix == ".safetensors":
        real_size.write_safetensors(path, shapes, dtype)
    else:
        real_size.write_bin(path, shapes, dtype, nest="image_proj" if kind == "image_proj" else None)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--model-dtype", choices=["float32", "float16", "bfloat16"],
                        help="MODEL weight dtype (default: ComfyUI's choice for the device)")
    parser.add_argument("--workdir", help="folder for the generated files (default: a new temporary folder)")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], args.one[1], args.model_dtype)))
        return 0
    workdir = tempfile.mkdtemp(prefix="musev_bench_load_", dir=args.workdir)
    if os.path.commonpath([os.path.abspath(workdir), REPO]) == REPO:
        raise SystemExit("the work folder must be outside the repository")
    results, failed = [], False
    try:
        for fmt in args.formats:
            for kind in args.kinds:
                started = time.perf_counter()
                path = write_file(kind, fmt, workdir)
                written = time.perf_counter() - started
                command = [sys.executable, __file__, "--one", kind, path]
                if args.model_dtype:
                    command += ["--model-dtype", args.model_dtype]
                r = result_of(command)
                os.remove(path)
                if r is None:
                    failed = True
                    continue
                results.append(r)
                print(f"{r['file']:42s} {r['file_mb']:8.0f} MB file (written in {written:5.1f} s)  load "
                      f"{r['seconds']:6.2f} s  peak +{r['peak_increase_mb']:7.0f} MB  kept {r['kept_mb']:7.0f} MB "
                      f"{','.join(r['kept_dtypes'])}  ratio {r['ratio']:.2f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    worst = max((r["ratio"] for r in results), default=float("nan"))
    print(f"worst peak/kept ratio: {worst:.2f} (bar 1.30)")
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
