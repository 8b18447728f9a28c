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

step() { printf '\n==> [install] %s (%s since the start)\n' "$*" "$(elapsed)"; }
elapsed() { printf '%dm%02ds' $((SECONDS / 60)) $((SECONDS % 60)); }
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

build_mmcv() {
  # Runs in a subshell (in the background): its PYTHONPATH and temp folder are its own. Not
  # `local`: the EXIT trap runs after the function has returned, when locals are gone.
  local src log whl jobs="${MAX_JOBS:-$(nproc)}"
  mmcv_build="$(mktemp -d)"
  trap 'rm -rf "${mmcv_build:-}"' EXIT
  local build="$mmcv_build"
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
  # mostly spent there (43 s -> 20 s of CPU per file, measured), and no shipped config runs mmcv's
  # compiled CPU kernels on a hot path (our deformable conv and the CPU deformable attention are
  # PyTorch code); CUDA kernels keep nvcc's flags.
  # Progress: ninja's "[n/total]" lines, one short line each; the full output goes to a log that
  # is shown if the build fails.
  log="$build/build.log"
  if ! (cd "$src" && CFLAGS="${CFLAGS:-} -g0 -O1" MMCV_WITH_OPS=1 FORCE_CUDA=$with_cuda \
        MAX_JOBS="$jobs" "$py" setup.py -q bdist_wheel -d "$build/dist") 2>&1 | tee "$log" |
      awk '/^\[[0-9]+\/[0-9]+\]/ { split($1, n, /[][]/); f = ""
             for (i = 2; i <= NF; i++) if ($i ~ /\.(cpp|cu)$/) f = $i
             sub(/.*\//, "", f); printf "  mmcv: compiled %s  %s\n", n[2], f; fflush() }'; then
    tail -n 40 "$log" >&2
    exit 1
  fi
  mkdir -p "$wheel_dir"
  # Copy then rename, so an interrupted run never leaves a half-written wheel in the cache.
  whl=$(ls "$build"/dist/mmcv-*.whl)
  cp "$whl" "$wheel_dir/.partial" && mv "$wheel_dir/.partial" "$wheel_dir/$(basename "$whl")"
}

current="mmcv $MMCV_VERSION with ops ($tag)"
step "$current"
builder=""
if "$py" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  echo "mmcv $MMCV_VERSION with ops already installed"
elif ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
  echo "using the cached wheel in $wheel_dir"
else
  jobs="${MAX_JOBS:-$(nproc)}"
  echo "no cached wheel in $wheel_dir: building mmcv $MMCV_VERSION from source."
  echo "Why: mmseg 1.2 needs mmcv < 2.2, and mmcv 2.1.0 has no wheel for torch $torch_ver."
  echo "How long: about $((12 / jobs + 1)) minutes with $jobs compile jobs on an idle machine, longer when other work loads it (77 C++ files$([ $with_cuda = 1 ] && echo ', plus CUDA kernels: longer'));"
  echo "once only: the wheel is cached in $wheel_dir and later installs take seconds."
  echo "The other packages and this repository's op install meanwhile."
  (build_mmcv) &
  builder=$!
fi

# What does not need mmcv installs while mmcv builds: mmseg and mmdet require it, so they wait.
current="install the pinned requirements (but mmseg, mmdet)"
step "$current"
grep -vE '^(mmsegmentation|mmdet)==' requirements.txt > .venv/requirements-before-mmcv.txt
"${pip[@]}" install -q -r .venv/requirements-before-mmcv.txt

current="install mmseg-vitsplit (editable) and its compiled op"
step "$current"
"${pip[@]}" install -q --no-deps --no-build-isolation -e .
# Rebuilt only when its sources are newer than the installed module (a second run stays quick).
op=$("$py" -c 'import torch, vitsplit_msda_ext as e; print(e.__file__)' 2>/dev/null || true)
if [ -n "$op" ] && [ -z "$(find ops/csrc ops/setup.py -newer "$op" 2>/dev/null)" ]; then
  echo "vitsplit_msda_ext is up to date ($op)"
else
  PYTHON="$py" FORCE_CUDA=$with_cuda bash ops/make.sh
fi

current="mmcv $MMCV_VERSION with ops ($tag)"
if [ -n "$builder" ]; then
  step "waiting for the mmcv build"
  wait "$builder"
fi
if ! "$py" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  "${pip[@]}" install -q --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl
fi

current="install mmseg and mmdet"
step "$current"
"${pip[@]}" install -q -r requirements.txt

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
