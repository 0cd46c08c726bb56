"""In-process ComfyUI for tests: import ComfyUI from $COMFYUI_DIR and this pack as a package.

Recipe from ../shared/spec/comfyui_host_ci.md §6 (CLI args set before import, `utils.extra_config` before
`nodes` to avoid the `utils` shadowing).
"""
from __future__ import annotations

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_NAME = "comfyui_musev_pack"
_bootstrapped = False


def comfy_dir() -> str | None:
    path = os.environ.get("COMFYUI_DIR")
    return path if path and os.path.isfile(os.path.join(path, "comfy", "model_patcher.py")) else None


def bootstrap(args: list[str] | None = None) -> None:
    """Make `comfy`, `folder_paths`, `nodes`... importable (CPU, PyTorch attention). Idempotent.

    `args` replaces the ComfyUI command-line flags (benchmarks on CUDA or with another attention backend).
    """
    global _bootstrapped
    if _bootstrapped:
        return
    path = comfy_dir()
    if path is None:
        raise RuntimeError("COMFYUI_DIR must point at a ComfyUI source tree (see .ci/install_host.sh)")
    if path not in sys.path:
        sys.path.insert(0, path)
    saved = sys.argv
    # PyTorch SDPA attention, as ComfyUI uses on current GPUs (its CPU default is the chunked sub-quadratic one)
    sys.argv = [saved[0]] + (["--cpu", "--use-pytorch-cross-attention"] if args is None else list(args))
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import utils.extra_config  # noqa: F401  (must precede `import nodes`)
        import comfy.cli_args  # noqa: F401
    finally:
        sys.argv = saved
    _bootstrapped = True


def import_pack():
    """Import the repository as a package (as ComfyUI would load it) and return the module."""
    bootstrap()
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, os.path.join(REPO, "__init__.py"),
                                                  submodule_search_locations=[REPO])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def pack_module(name: str):
    """A submodule of the pack, e.g. `pack_module("nodes.musev_model")`."""
    import_pack()
    return importlib.import_module(f"{PACK_NAME}.{name}")
