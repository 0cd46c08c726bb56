"""Full-size random-weight MuseV models for the real-size benchmarks (nothing here is ever written into the repo).

Shapes come from `../shared/fixtures/checkpoint_keys/keys.json` (the key layout of TMElyralab/MuseV's released
files): `musev` (1557 keys: SD1.5 UNet + 871 MuseV tensors), `musev_referencenet` (1625), `referencenet` (298).
Weights are random (uniform, variance 1/fan_in; norms 1, biases 0), which is enough for time and memory; never for images.
"""
from __future__ import annotations

import json
import math
import os
import struct

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS_JSON = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "checkpoint_keys", "keys.json")

#: MuseV's `ip_adapter_image_proj.bin`: ViT-H image_embeds (1024) -> 4 tokens of 768.
IMAGE_PROJ_SHAPES = {"proj.weight": [3072, 1024], "proj.bias": [3072], "norm.weight": [768], "norm.bias": [768]}

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def released_shapes(keys_json: str | None = None) -> dict[str, dict[str, list[int]]]:
    """`{file kind: {key: shape}}` for `sd15_unet2d`, `musev`, `musev_referencenet`, `referencenet`."""
    path = keys_json or os.environ.get("MUSEV_KEYS_JSON", KEYS_JSON)
    with open(path) as f:
        return json.load(f)


def random_tensor(key: str, shape: list[int], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """A plausible random weight: 1-D weights (norms) 1, biases 0, `temporal_weight` 1e-5 (MuseV's initial value),
    other weights uniform with variance 1/fan_in so activations keep their scale through the layers (no denormal slow paths)."""
    if key.endswith("temporal_weight"):
        return torch.full(shape, 1e-5, dtype=dtype)
    if key.endswith(".bias") or len(shape) == 0:
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype)
    bound = math.sqrt(3.0 / math.prod(shape[1:]))  # uniform with variance 1/fan_in; cheaper than randn
    return torch.empty(shape, dtype=dtype).uniform_(-bound, bound, generator=generator)


def write_safetensors(path: str, shapes: dict[str, list[int]], dtype: torch.dtype, seed: int = 0) -> int:
    """Write a `.safetensors` file of random tensors one tensor at a time (never the whole file in memory).

    Layout per the safetensors format: 8-byte little-endian header length, JSON header
    `{key: {dtype, shape, data_offsets}}`, then the tensors' bytes back to back.

    Returns:
        bytes written.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = math.prod(shape) * itemsize
        header[key] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    generator = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key, shape in shapes.items():
            f.write(random_tensor(key, shape, dtype, generator).contiguous().view(torch.uint8).numpy().tobytes())
    return 8 + len(blob) + offset


def write_bin(path: str, shapes: dict[str, list[int]], dtype: torch.dtype, seed: int = 0,
              nest: str | None = None) -> int:
    """Write a pickled `.bin` (torch zip format) of random tensors.

    The tensors are first streamed to a scratch `.safetensors` next to `path` and `torch.save`d from its file
    mapping, so the writer never holds the whole file in anonymous memory. `nest` puts them under one key
    (`{"image_proj": {...}}`, IP-Adapter's layout).

    Returns:
        bytes written.
    """
    from safetensors import safe_open
    scratch = path + ".scratch.safetensors"
    write_safetensors(scratch, shapes, dtype, seed)
    try:
        with safe_open(scratch, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            torch.save({nest: tensors} if nest else tensors, path)
            del tensors
    finally:
        os.remove(scratch)
    return os.path.getsize(path)


def sd15_model_patcher(dtype: torch.dtype | None = None, device: str = "cpu", random_weights: bool = False):
    """A ComfyUI SD1.5 MODEL built from ComfyUI's own classes at full size.

    Args:
        dtype: UNet weight dtype (default: what ComfyUI picks for the device).
        device: "cpu" or "cuda" (the load device).
        random_weights: fill the UNet with random weights (needed to run it); without, its memory is allocated
            but never touched, so it costs no resident memory (enough for load benchmarks).
    Returns:
        a `ModelPatcher`.
    """
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15({
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
        "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
        "use_temporal_resblock": False})
    load_device = comfy.model_management.get_torch_device()
    params = 859_520_964
    dtype = dtype or comfy.model_management.unet_dtype(model_params=params,
                                                       supported_dtypes=config.supported_inference_dtypes)
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes)
    config.set_inference_dtype(dtype, manual_cast)
    model = config.get_model({})
    if random_weights:
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for key, tensor in model.diffusion_model.state_dict().items():
                shape = list(tensor.shape)
                if key.endswith(".bias") or len(shape) <= 1 or tensor.dtype.itemsize < 2:
                    tensor.copy_(random_tensor(key, shape, tensor.dtype, generator))
                else:  # in place: no temporary of the largest tensors
                    bound = math.sqrt(3.0 / math.prod(shape[1:]))
                    tensor.uniform_(-bound, bound, generator=generator)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                            offload_device=comfy.model_management.unet_offload_device())


def musev_random_state_dict(flavour: str = "musev", dtype=None, seed: int = 2) -> dict:
    """Random MuseV tensors (871 for `musev`, 939 for `musev_referencenet`) shaped like the released file.

    The SD1.5 tensors of the released file are left out (the pack never reads them; the SD part is the MODEL).
    """
    import torch
    shapes = released_shapes()
    sd_keys = set(shapes["sd15_unet2d"])
    generator = torch.Generator().manual_seed(seed)
    return {k: random_tensor(k, s, dtype or torch.float32, generator) for k, s in shapes[flavour].items()
            if k not in sd_keys}


def bootstrap(device: str = "cpu", attention: str = "pytorch", extra: list[str] | None = None) -> None:
    """Import ComfyUI from $COMFYUI_DIR with CLI flags for the benchmark (CPU or CUDA, attention backend).

    Args:
        device: "cpu" adds `--cpu`.
        attention: "pytorch" (`--use-pytorch-cross-attention`), "split", "quad" (sub-quadratic), "sage",
            "flash", or "default" (ComfyUI's own choice for the device).
        extra: more ComfyUI flags.
    """
    import sys
    tests = os.path.join(REPO, "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import comfy_env
    flags = {"pytorch": ["--use-pytorch-cross-attention"], "split": ["--use-split-cross-attention"],
             "quad": ["--use-quad-cross-attention"], "sage": ["--use-sage-attention"],
             "flash": ["--use-flash-attention"], "default": []}[attention]
    comfy_env.bootstrap(args=(["--cpu"] if device == "cpu" else []) + flags + list(extra or []))
