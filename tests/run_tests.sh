#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs a real ComfyUI 0.3.75 host (CPU) into .host/ the first time
# (about 2 minutes, registries only), then runs pytest against it. Extra arguments go to pytest.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
HOST=${MUSEV_HOST_DIR:-$REPO/.host}
bash "$REPO/.ci/install_host.sh" "$HOST"
# Debian's chromium for the browser tests (about 30 s the first time); without it those tests are skipped
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "chromium could not be installed: the browser tests will be skipped"
fi
export COMFYUI_DIR="$HOST/ComfyUI"
export MUSEV_TINY_MODELS_CACHE="$HOST/tiny_models"
export MUSEV_REQUIRE_COMFY=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export XDG_CACHE_HOME="$HOST/cache" MPLCONFIGDIR="$HOST/cache/mpl"
cd "$REPO"
exec "$HOST/venv/bin/python" -m pytest -ra "$@"
