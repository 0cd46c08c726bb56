"""MuseV (TMElyralab) inference building blocks in plain torch: no ComfyUI import anywhere in this package.

- `temporal`: TemporalConvLayer / TemporalTransformer, the modules MuseV adds to an SD1.5 UNet.
- `embeddings`: sinusoidal features and the window-relative frame embedding.
- `checkpoint`: reading model files, telling MuseV checkpoints from other files, inferring their layout.
- `motion_module`: all temporal modules of one checkpoint under its own key names.
- `reference_attention`: the parameter-free reference-only self-attention context.
- `windows`: `uniform_v2` context windows and fusion weights.
- `noise`: video-fusion noise and the image-based noise blend.
"""
from .checkpoint import CheckpointError, read_state_dict
from .motion_module import MuseVMotionModule, build_motion_module, load_motion_module
from .noise import blend_condition_into_noise, initial_noise
from .reference_attention import reference_only_context
from .windows import FUSE_METHODS, fuse_weights, uniform_v2_windows, validate_window_settings

__all__ = [
    "CheckpointError", "read_state_dict", "MuseVMotionModule", "build_motion_module", "load_motion_module",
    "blend_condition_into_noise", "initial_noise", "reference_only_context", "FUSE_METHODS", "fuse_weights",
    "uniform_v2_windows", "validate_window_settings",
]
