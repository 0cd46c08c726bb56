"""ComfyUI model folders of the pack (also reachable through extra_model_paths.yaml)."""
from __future__ import annotations

import os

import folder_paths

#: folder name -> file extensions. `musev` keeps the layout of TMElyralab/MuseV's `motion/` folder:
#: musev/unet/..., musev_referencenet/{unet,referencenet,ip_adapter_image_proj.bin}, musev_referencenet_pose/...
MODEL_FOLDERS = {
    "musev": {".safetensors", ".bin", ".pt", ".pth", ".ckpt"},
    # TMElyralab/MusePose layout: denoising_unet.pth, motion_module.pth, reference_unet.pth, pose_guider.pth
    "musepose": {".safetensors", ".pth", ".pt", ".bin"},
    "dwpose": {".onnx"},
}


def register_model_folders() -> None:
    """Add `models/<name>` for each pack folder, keeping paths a user already configured."""
    for name, extensions in MODEL_FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, name)
        entry = folder_paths.folder_names_and_paths.get(name)
        if entry is None:
            folder_paths.folder_names_and_paths[name] = ([default], set(extensions))
            continue
        paths, known = entry
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[name] = (paths, set(known) | extensions)


def list_files(name: str) -> list[str]:
    """Files of a pack folder, relative to it (e.g. `musev/unet/diffusion_pytorch_model.safetensors`)."""
    return folder_paths.get_filename_list(name)


def resolve(name: str, filename: str) -> str:
    """Absolute path of `filename` in folder `name`.

    Raises:
        FileNotFoundError: naming the file and every directory searched.
    """
    path = folder_paths.get_full_path(name, filename)
    if path is None:
        searched = folder_paths.get_folder_paths(name)
        raise FileNotFoundError(f"'{filename}' is not in the '{name}' model folder (searched: {', '.join(searched)})")
    return path


class LastModelCache:
    """Keeps the last model a node built, reused while its files (and options) are unchanged.

    Opening a ReferenceNet or ONNX sessions is slow, so a node keeps one; building a different one frees the
    previous first. ComfyUI's model management still offloads managed models from VRAM.
    """

    def __init__(self):
        self.key = None
        self.value = None

    def get(self, paths: tuple[str, ...], build, options: tuple = ()):
        """The cached model for these files and options, or `build()` (called with no arguments) when they changed."""
        key = tuple((path, os.path.getmtime(path)) for path in paths) + tuple(options)
        if self.key != key:
            self.key, self.value = None, None
            self.value = build()
            self.key = key
        return self.value
