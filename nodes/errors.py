"""User-facing errors of the pack's nodes: short type names and messages that name the node.

ComfyUI reports a failed node's exception type as `module.Class`; for a custom-node pack the module is the pack's
absolute folder on the server (e.g. `/home/u/ComfyUI/custom_nodes/musev-nodes.pose_align.dwpose.PoseModelError`).
The pack's own error classes are reported as `MuseV.<Class>` instead, and their message starts with the node's
display name, so an API client sees which pack and node refused what without the server's paths.
"""
from __future__ import annotations

import functools

from ..musev_core.checkpoint import CheckpointError
from ..pose_align.align import NoPersonError
from ..pose_align.dwpose import PoseModelError

PACK_ERRORS = (CheckpointError, PoseModelError, NoPersonError)
#: what ComfyUI's `full_type_name` prints before the class name
SHORT_MODULE = "MuseV"

for _error_class in PACK_ERRORS:
    _error_class.__module__ = SHORT_MODULE  # type name only; the class objects and their behaviour are unchanged


def names_node(display_name: str):
    """Decorator for a node's FUNCTION: the pack's own errors are re-raised (same class) as
    `"<display_name>: <message>"`, traceback kept. Other exceptions (Cancel, out of memory, ...) pass unchanged."""
    def wrap(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except PACK_ERRORS as error:
                if str(error).startswith(display_name + ": "):
                    raise
                raise type(error)(f"{display_name}: {error}").with_traceback(error.__traceback__) from None
        return run
    return wrap
