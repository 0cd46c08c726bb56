"""musev_core must import and run with ComfyUI absent (DESIGN.md principle 5)."""
from clean_imports import COMFY_MODULES, absolute_imports, run_clean


def test_no_comfy_imports_in_core_sources():
    for name, module in absolute_imports("musev_core"):
        assert module.split(".")[0] not in COMFY_MODULES, (name, module)


def test_core_imports_and_runs_in_a_clean_interpreter():
    code = (
        "import sys, torch\n"
        "import musev_core\n"
        "from musev_core.temporal import TemporalConvLayer, TemporalTransformer\n"
        "x = torch.randn(2 * 3, 32, 4, 4)\n"
        "y = TemporalTransformer(32, 64)(TemporalConvLayer(32)(x, 3), torch.randn(3, 64), 3)\n"
        "assert y.shape == x.shape\n"
        "assert not any(m == 'comfy' or m.startswith('comfy.') or m == 'folder_paths' for m in sys.modules), "
        "[m for m in sys.modules if 'comfy' in m]\n"
        "print('ok')\n"
    )
    result = run_clean(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
