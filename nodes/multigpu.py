"""ComfyUI's core MultiGPU on a MuseV MODEL: refused with a message saying what to change.

Newer ComfyUI splits CFG/conds batches over several GPUs when a MODEL carries "multigpu" additional models (the
MultiGPU nodes add them). `prepare_sampling` then calls `ModelPatcher.match_multigpu_clones`, which deep-clones every
other additional model of the MODEL per GPU through that model's `cached_patcher_init` loader factory, and
ControlNets get per-device deep clones with a copy of their hints. MuseV's state is not per device: its motion
modules are shared by reference with its wrappers, and the context handler slices the ControlNet hints of the
original ControlNet per window (a device clone would keep the whole video's hints). Rather than fail inside core
(no `cached_patcher_init` on the motion modules) or sample with wrong hints, Load MuseV UNet and sampling stop
first with a `ValueError`. Detection is by feature (`get_additional_models_with_key("multigpu")`), so hosts without
MultiGPU never see it.
"""
from __future__ import annotations

import comfy.patcher_extension

KEY = "musev_multigpu"
#: additional-models key under which core MultiGPU keeps the per-GPU clones of a MODEL
MULTIGPU_MODELS_KEY = "multigpu"


def multigpu_clones(model_patcher) -> list:
    """The MODEL's core MultiGPU clones (empty on hosts without MultiGPU)."""
    getter = getattr(model_patcher, "get_additional_models_with_key", None)
    return list(getter(MULTIGPU_MODELS_KEY)) if getter is not None else []


def check_single_gpu(model_patcher) -> None:
    """Refuse a MODEL prepared for core MultiGPU.

    Raises:
        ValueError: naming the number of extra GPUs and what to remove.
    """
    clones = multigpu_clones(model_patcher)
    if clones:
        devices = ", ".join(str(getattr(c, "load_device", "?")) for c in clones)
        raise ValueError(
            f"MuseV runs on one GPU, but this MODEL is set up for ComfyUI's MultiGPU with {len(clones)} extra "
            f"device(s) ({devices}): remove the MultiGPU node (e.g. 'MultiGPU Initialize') from the MODEL path of "
            f"Load MuseV UNet and the MuseV sampler; MuseV's context windows already bound the memory per UNet call")


def _prepare_sampling_wrapper(executor, model, *args, **kwargs):
    """PREPARE_SAMPLING wrapper: refuse before core's `match_multigpu_clones` deep-clones the motion modules."""
    check_single_gpu(model)
    return executor(model, *args, **kwargs)


def refuse_multigpu(model_patcher) -> None:
    """Check now and register the sampling-time check on `model_patcher` (a MuseV MODEL clone)."""
    check_single_gpu(model_patcher)
    kind = comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING
    model_patcher.remove_wrappers_with_key(kind, KEY)
    model_patcher.add_wrapper_with_key(kind, KEY, _prepare_sampling_wrapper)
