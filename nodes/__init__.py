"""ComfyUI side of the pack: node classes and the adapter that plugs `musev_core` into ComfyUI's MODEL and sampler."""
