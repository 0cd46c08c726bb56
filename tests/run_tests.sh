#!/usr/bin/env bash
# Runs the whole test suite on each ComfyUI host the pack is tested with: 0.3.75 (from the registry) and 0.7.0
# (from ../shared/hosts). Each host is installed the first time into .host/comfyui-VERSION/ (about 2 minutes each,
# registries only), then pytest runs against it; the generated tiny models are shared. Extra arguments go to pytest.
#   MUSEV_HOSTS="0.7.0" bash tests/run_tests.sh -k parity     # one host only
#   COMFYUI_DIR=/path/ComfyUI MUSEV_PYTHON=/path/venv/bin/python bash tests/run_tests.sh   # an existing ComfyUI,
#                                                             # used as it is: nothing is installed into it or removed
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
HOSTS_DIR=${MUSEV_HOST_DIR:-$REPO/.host}
HOSTS=${MUSEV_HOSTS:-0.3.75 0.7.0}

# Debian's chromium for the browser tests (about 30 s the first time, when run as root); without it they are skipped
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "chromium could not be installed: the browser tests will be skipped"
fi
export MUSEV_REQUIRE_COMFY=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

run_pytest() {  # $1 python, $2 ComfyUI dir, $3 scratch dir; then pytest args
  local python=$1 comfy=$2 scratch=$3; shift 3
  mkdir -p "$scratch"
  (cd "$REPO" && COMFYUI_DIR="$comfy" MUSEV_TINY_MODELS_CACHE="$HOSTS_DIR/tiny_models" \
     XDG_CACHE_HOME="$scratch/cache" MPLCONFIGDIR="$scratch/cache/mpl" \
     "$python" -m pytest -ra -p no:cacheprovider "$@")
}

if [ -n "${COMFYUI_DIR:-}" ]; then
  python=${MUSEV_PYTHON:?set MUSEV_PYTHON to the Python of the ComfyUI in COMFYUI_DIR}
  echo "== tests against the existing ComfyUI in $COMFYUI_DIR"
  run_pytest "$python" "$COMFYUI_DIR" "$HOSTS_DIR/existing" "$@"
  exit
fi

failed=""
for version in $HOSTS; do
  host=$HOSTS_DIR/comfyui-$version
  bash "$REPO/.ci/install_host.sh" "$host" "$version"
  echo "== tests on ComfyUI $version ($host)"
  start=$(date +%s)
  run_pytest "$host/venv/bin/python" "$host/ComfyUI" "$host" "$@" || failed="$failed $version"
  echo "== ComfyUI $version: $(( $(date +%s) - start )) s"
done
if [ -n "$failed" ]; then echo "tests failed on ComfyUI:$failed" >&2; exit 1; fi
echo "tests passed on ComfyUI: $HOSTS"
