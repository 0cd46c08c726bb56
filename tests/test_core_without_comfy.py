"""musev_core must import and run with ComfyUI absent (DESIGN.md principle 5)."""
import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_comfy_imports_in_core_sources():
    for root, _, files in os.walk(os.path.join(REPO, "musev_core")):
        for name in files:
            if not name.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(root, name)).read())
            for node in ast.walk(tree):
                modules = []
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module or ""]
                for module in modules:
                    top = module.split(".")[0]
                    assert top not in {"comfy", "folder_paths", "nodes", "comfy_extras", "comfy_api"}, (name, module)


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
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
