#!/usr/bin/env bash
# The main job on a fresh machine: installs a ComfyUI 0.3.75 host into .host/comfyui-0.3.75/ (shared with the tests; first run only, about 2 minutes), starts
# ComfyUI headless on 127.0.0.1 and turns an image into a video with workflows/image2video.json.
#   bash workflows/demo.sh IMAGE [--models-dir /path/to/ComfyUI/models] [other run_headless.py options]
# Without real models in --models-dir (or $MUSEV_MODELS_DIR) it uses a generated tiny demo model set (noise video).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
HOST=${MUSEV_HOST_DIR:-$REPO/.host}/comfyui-0.3.75
IMAGE=${1:?usage: bash workflows/demo.sh IMAGE [--models-dir DIR]}
shift
bash "$REPO/.ci/install_host.sh" "$HOST" 0.3.75
export COMFYUI_DIR="$HOST/ComfyUI" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$HOST/venv/bin/python" "$REPO/workflows/run_headless.py" image2video --image "$IMAGE" --work "$HOST/demo" "$@"
