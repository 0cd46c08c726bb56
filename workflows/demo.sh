#!/usr/bin/env bash
# The main job: turns an image into a video with workflows/image2video.json, headless, on 127.0.0.1.
#   bash workflows/demo.sh IMAGE [--models-dir /path/to/ComfyUI/models] [--comfyui /path/to/ComfyUI] [run_headless.py options]
# With --comfyui (or $COMFYUI_DIR) it runs your own ComfyUI with its own Python (your GPU); otherwise it installs a
# CPU ComfyUI 0.3.75 host into .host/comfyui-0.3.75/ first (shared with the tests; first run only, about 2 minutes). Without --models-dir (or $MUSEV_MODELS_DIR)
# it uses a generated tiny demo model set (noise video); with it, every model file the workflow needs must be there.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
HOST=${MUSEV_HOST_DIR:-$REPO/.host}/comfyui-0.3.75
IMAGE=${1:?usage: bash workflows/demo.sh IMAGE [--models-dir DIR] [--comfyui DIR]}
shift
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
for arg in "$@"; do
  if [ "$arg" = "--comfyui" ] || [[ "$arg" == --comfyui=* ]]; then OWN=1; fi
done
if [ -n "${COMFYUI_DIR:-}" ] || [ -n "${OWN:-}" ]; then
  # your ComfyUI: run_headless.py re-runs itself with that ComfyUI's Python
  exec python3 "$REPO/workflows/run_headless.py" image2video --image "$IMAGE" --work "$HOST/demo" "$@"
fi
bash "$REPO/.ci/install_host.sh" "$HOST" 0.3.75
export COMFYUI_DIR="$HOST/ComfyUI"
exec "$HOST/venv/bin/python" "$REPO/workflows/run_headless.py" image2video --image "$IMAGE" --work "$HOST/demo" "$@"
