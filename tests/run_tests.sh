#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs a real ComfyUI 0.3.75 host (CPU) into .host/ the first time
# (about 2 minutes, registries only), then runs pytest against it. Extra arguments go to pytest.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
HOST=${MUSEV_HOST_DIR:-$REPO/.host}
bash "$REPO/.ci/install_host.sh" "$HOST"
export COMFYUI_DIR="$HOST/ComfyUI"
export MUSEV_TINY_MODELS_CACHE="$HOST/tiny_models"
export MUSEV_REQUIRE_COMFY=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export XDG_CACHE_HOME="$HOST/cache" MPLCONFIGDIR="$HOST/cache/mpl"
cd "$REPO"
exec "$HOST/venv/bin/python" -m pytest -ra "$@"
