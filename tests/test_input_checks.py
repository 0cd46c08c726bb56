"""Queue-time checks of every pack node: declared ranges hold over the API and every float must be finite.

ComfyUI refuses out-of-range values itself only for inputs NOT named in VALIDATE_INPUTS, and never refuses NaN
(nodes/input_checks.py); these tests walk every node's INPUT_TYPES so a new input cannot slip through.
"""
import inspect
import math

import pytest


def pack_nodes(comfy):
    return sorted(comfy.NODE_CLASS_MAPPINGS.items())


def numeric_inputs(node_class):
    inputs = node_class.INPUT_TYPES()
    for group in ("required", "optional"):
        for name, spec in inputs.get(group, {}).items():
            if spec[0] in ("INT", "FLOAT"):
                yield name, spec[0], spec[1]


def test_every_float_input_refuses_non_finite_values_by_comfyuis_own_check(comfy):
    floats = []
    for class_name, node_class in pack_nodes(comfy):
        for name, kind, options in numeric_inputs(node_class):
            if kind != "FLOAT":
                continue
            floats.append(f"{class_name}.{name}")
            low, high = options["min"], options["max"]
            assert math.isfinite(low) and math.isfinite(high), (class_name, name)
            # what ComfyUI's validate_inputs evaluates for a FLOAT widget not named in VALIDATE_INPUTS
            assert float("nan") < low, f"{class_name}.{name}: NaN would pass the min check"
            assert float("-inf") < low and float("inf") > high
            assert not (low < low) and not (options["default"] < low) and not (options["default"] > high)
    assert "MuseVParallelDenoiseSampler.cfg" in floats and "MuseVIPAdapterEmbed.scale" in floats


def test_inputs_named_in_validate_inputs_keep_their_declared_range(comfy):
    checked = []
    for class_name, node_class in pack_nodes(comfy):
        validate = getattr(node_class, "VALIDATE_INPUTS", None)
        if validate is None:
            continue
        named = inspect.getfullargspec(validate).args[1:]
        assert inspect.getfullargspec(validate).varkw is None, f"{class_name}: **kwargs would name every input"
        specs = {name: (kind, options) for name, kind, options in numeric_inputs(node_class)}
        defaults = {name: specs[name][1]["default"] for name in named if name in specs}
        for name in named:
            if name not in specs:
                continue
            kind, options = specs[name]
            for bad in (options["max"] + 1, options["min"] - 1):
                message = validate(**dict(defaults, **{name: bad}))
                assert isinstance(message, str) and message.startswith(f"{name} must be between"), (name, message)
                assert message.endswith(f"got {bad}")
                checked.append((class_name, name))
            assert validate(**defaults) is True
    assert ("MuseVParallelDenoiseSampler", "context_frames") in checked


def test_finite_bound_is_a_plain_number_everywhere_else(comfy):
    import json
    checks = comfy_module("nodes.input_checks")
    bound = checks.finite(0.5)
    assert json.dumps({"min": bound}) == '{"min": 0.5}'
    assert bound == 0.5 and 0.4 < bound and not (0.6 < bound) and not (0.5 < bound) and float("nan") < bound
    assert checks.declared_range_problem(comfy.NODE_CLASS_MAPPINGS["MuseVParallelDenoiseSampler"],
                                         cfg=float("nan")) == "cfg must be a finite number, got nan"
    with pytest.raises(KeyError, match="has no input 'nope'"):
        checks.declared_range_problem(comfy.NODE_CLASS_MAPPINGS["MuseVParallelDenoiseSampler"], nope=1)


def comfy_module(name):
    import comfy_env
    return comfy_env.pack_module(name)
