"""Queue-time input checks shared by the pack's nodes (spec/comfyui.md, validation).

How ComfyUI (0.3.75, 0.7.0 and newest) validates a queued prompt, and why the pack works with it this way:

- For every widget input NOT named in the node's `VALIDATE_INPUTS` signature, ComfyUI itself refuses values below the
  declared `min` or above `max` (`value_smaller_than_min` / `value_bigger_than_max`), once, under that input.
- For every input named in the signature it skips those checks, calls `VALIDATE_INPUTS`, and attaches a failure
  message to EVERY named input. So a node names only the inputs of a rule that needs several values (the sampler's
  `context_overlap < context_frames`), and re-checks their declared ranges with `declared_range_problem`.
- ComfyUI's range check lets NaN through (`nan < min` and `nan > max` are both False). A FLOAT input declared with
  `finite(...)` as its `min` is refused by ComfyUI's own check instead: Python gives a float subclass's reflected
  comparison priority, so `nan < FiniteBound(0.0)` asks `FiniteBound.__gt__`, which says yes. +-inf are refused by
  `min`/`max` as usual. The bound serialises to /object_info as a plain number.
"""
from __future__ import annotations

import math


class FiniteBound(float):
    """A FLOAT input's declared `min` that NaN counts as below (so ComfyUI's own queue-time check refuses NaN).

    Behaves exactly like the float it wraps for every other value.
    """

    def __gt__(self, other):  # reached for `value < bound` before float.__lt__ (subclass priority)
        if isinstance(other, (int, float)) and math.isnan(other):
            return True
        return float.__gt__(self, other)

    def __repr__(self):
        return float.__repr__(self)


def finite(minimum: float) -> FiniteBound:
    """`min` for a FLOAT input: `{"min": finite(0.0), "max": 1.0}` refuses NaN, -inf and +inf at queue time."""
    return FiniteBound(minimum)


def _spec(node_class, name: str):
    inputs = node_class.INPUT_TYPES()
    for group in ("required", "optional"):
        if name in inputs.get(group, {}):
            return inputs[group][name]
    raise KeyError(f"{node_class.__name__} has no input '{name}'")


def declared_range_problem(node_class, **values) -> str | None:
    """Re-check declared INT/FLOAT ranges of inputs named in `VALIDATE_INPUTS` (ComfyUI skips them for those).

    Args:
        node_class: the node class (its `INPUT_TYPES()` is read).
        **values: input name -> value as queued; None (a linked input, unknown at queue time) is skipped.

    Returns:
        None when every value is a finite number inside its declared [min, max], else the first problem, e.g.
        "context_frames must be between 1 and 256, got 300".
    """
    for name, value in values.items():
        if value is None:
            continue
        kind, options = _spec(node_class, name)[:2]
        if kind not in ("INT", "FLOAT"):
            continue
        low, high = options.get("min"), options.get("max")
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} must be a finite number, got {value}"
        if (low is not None and value < low) or (high is not None and value > high):
            low_text = "" if low is None else f"{float(low):g}" if kind == "FLOAT" else f"{int(low)}"
            high_text = "" if high is None else f"{float(high):g}" if kind == "FLOAT" else f"{int(high)}"
            if low is not None and high is not None:
                return f"{name} must be between {low_text} and {high_text}, got {value}"
            if low is not None:
                return f"{name} must be at least {low_text}, got {value}"
            return f"{name} must be at most {high_text}, got {value}"
    return None
