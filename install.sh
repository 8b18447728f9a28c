#!/usr/bin/env bash
# Create .venv and install everything mmseg-vitsplit needs, mmcv 2.1.0 (with ops) built from source.
# Idempotent: a second run reuses .venv and the cached mmcv wheel and takes seconds.
#   bash install.sh            # PYTHON=python3.11 and VITSPLIT_CACHE=<dir> may be set
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
cache="${VITSPLIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmseg-vitsplit}"
MMCV_VERSION=2.1.0

step() { printf '\n==> [install] %s\n' "$*"; }
fail() { printf '\n!! [install] FAILED at step: %s\n' "$current" >&2; }
trap fail ERR
current="start"

current="create .venv with $PYTHON"
step "$current"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is required"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
py="$here/.venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)

current="install torch, torchvision, numpy and build tools"
step "$current"
pins=$(grep -E '^(torch|torchvision|numpy|setuptools)==' requirements.txt)
"${pip[@]}" install -q $pins wheel ninja

# CUDA kernels only where they can run: a visible GPU and nvcc.
with_cuda=0
if command -v nvcc >/dev/null 2>&1 && "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  with_cuda=1
fi
torch_ver=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
tag="torch${torch_ver}-$([ $with_cuda = 1 ] && echo cuda || echo cpu)-$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
wheel_dir="$cache/mmcv-$MMCV_VERSION-$tag"

current="mmcv $MMCV_VERSION with ops ($tag)"
step "$current"
if "$py" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  echo "mmcv $MMCV_VERSION with ops already installed"
else
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    echo "no cached wheel in $wheel_dir: building mmcv from source (tens of minutes on 2 cores)"
    build="$(mktemp -d)"
    # mmcv 2.1.0's setup.py only builds with setuptools<70 (and a wheel that still ships bdist_wheel);
    # torch needs a newer setuptools at run time, so the old pair lives in a throw-away dir for this build.
    "${pip[@]}" install -q --target "$build/buildtools" 'setuptools<70' 'wheel<0.44'
    export PYTHONPATH="$build/buildtools"
    "${pip[@]}" download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers need C++20.
    sed -i -e 's/c++14/c++20/g' -e 's/c++17/c++20/g' "$src/setup.py"
    # No debug info and -O1 for mmcv's host C++ (Python's defaults are -g -O3): the compile time is
    # mostly spent there, and no shipped config runs mmcv's compiled CPU kernels on a hot path (our
    # deformable conv and the CPU deformable attention are PyTorch code; CUDA kernels keep nvcc's flags).
    (cd "$src" && CFLAGS="${CFLAGS:-} -g0 -O1" MMCV_WITH_OPS=1 FORCE_CUDA=$with_cuda MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$py" setup.py -q bdist_wheel -d "$build/dist")
    mkdir -p "$wheel_dir"
    # Copy then rename, so an interrupted run never leaves a half-written wheel in the cache.
    whl=$(ls "$build"/dist/mmcv-*.whl)
    cp "$whl" "$wheel_dir/.partial" && mv "$wheel_dir/.partial" "$wheel_dir/$(basename "$whl")"
    unset PYTHONPATH
    rm -rf "$build"
  fi
  "${pip[@]}" install -q --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl
fi

current="install the pinned requirements"
step "$current"
"${pip[@]}" install -q -r requirements.txt

current="install mmseg-vitsplit (editable) and its compiled op"
step "$current"
"${pip[@]}" install -q --no-deps --no-build-isolation -e .
PYTHON="$py" FORCE_CUDA=$with_cuda bash ops/make.sh

current="check the install"
step "$current"
"$py" - <<'PY'
import mmcv, mmcv.ops, mmengine, mmseg, mmdet, torch
import mmseg_custom
from mmseg_custom.ops import compiled_ops_available
print(f'torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, '
      f'compiled deformable attention: {compiled_ops_available()}')
PY
trap - ERR
step "done: activate with 'source .venv/bin/activate'"
