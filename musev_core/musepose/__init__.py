"""MusePose (TMElyralab) building blocks in plain torch; no ComfyUI import (DESIGN.md principle 5).

A subpackage of `musev_core` because the top level of the repository is fixed by the product brief (DESIGN.md
"Layout") and MusePose shares the core's checkpoint reading and error types ("Two model families, one mechanism").

- `modules`: motion modules (window-relative PE, per-frame GroupNorm) and the pose guider.
- `checkpoint`: reading / checking the four released files, lean loading.
- `schedule`: windows with wrap-around, pose padding, zero-SNR DDIM arithmetic.
"""
from .checkpoint import CheckpointFile, check_kind, load_motion_modules, load_pose_guider
from .modules import MotionModule, MotionModules, PoseGuider, motion_module_positions, sdpa_attention
from .schedule import alphas_cumprod, musepose_windows, pose_padding, trailing_timesteps

__all__ = ["CheckpointFile", "check_kind", "load_motion_modules", "load_pose_guider", "MotionModule",
           "MotionModules", "PoseGuider", "motion_module_positions", "sdpa_attention", "alphas_cumprod",
           "musepose_windows", "pose_padding", "trailing_timesteps"]
