"""Helpers for the "no ComfyUI import" checks of musev_core and pose_align (DESIGN.md principle 5)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFY_MODULES = {"comfy", "folder_paths", "nodes", "comfy_extras", "comfy_api"}


def absolute_imports(package: str):
    """Yield `(file name, module)` for every absolute import in the sources of a top-level package folder."""
    for root, _, files in os.walk(os.path.join(REPO, package)):
        for name in files:
            if not name.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(root, name)).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield name, alias.name
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    yield name, node.module or ""


def run_clean(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter at the repository root, without the test session's PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
