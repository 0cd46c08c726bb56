"""ComfyUI_IPAdapter_plus as a second custom node for tests, unpacked at test time from ../shared/hosts.

The tree (cubiq/ComfyUI_IPAdapter_plus at 9d076a3, GPL-3.0, see ../shared/hosts/README.md) is test infrastructure:
it is never copied into this repository; tests unpack it into a temporary folder.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tarfile

ARCHIVE = os.path.join("hosts", "comfyui_ipadapter_plus-9d076a3.tar.gz")
FOLDER = "ComfyUI_IPAdapter_plus"


def archive(shared_dir: str) -> str:
    return os.path.join(shared_dir, ARCHIVE)


def unpack(shared_dir: str, target_dir: str) -> str:
    """Unpack the pack into `target_dir` (e.g. a server's custom_nodes); returns the pack's folder."""
    path = os.path.join(target_dir, FOLDER)
    if not os.path.isdir(path):
        os.makedirs(target_dir, exist_ok=True)
        with tarfile.open(archive(shared_dir)) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[0] == FOLDER and (m.isfile() or m.isdir())]
            tar.extractall(target_dir, members=members)
    return path


def import_in_process(path: str):
    """Import the unpacked pack as ComfyUI's loader would (a package named after its folder); returns it."""
    name = os.path.basename(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
