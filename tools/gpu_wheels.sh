#!/usr/bin/env bash
# Download into .whl/ (git-ignored) what tools/gpu_check.sh installs on a bare GPU machine that has
# Python 3.12 with torch, torchvision, timm, numpy and opencv but no package registry: wheels for
# CPython 3.12 on x86-64 Linux of every other package our code, its tests and tools/benchmark.py
# import (gpu_check.sh --dry-run finds any that is missing), and mmcv's source distribution,
# which gpu_check.sh builds there with CUDA ops. About 23 MB. Needs PyPI unless .whl/ is complete.
#   bash tools/gpu_wheels.sh [DEST]          # DEST: default .whl/ in the repository
#   bash tools/gpu_wheels.sh --check [DEST]  # offline: exit 1 naming what DEST lacks
# Idempotent: a complete DEST is checked offline and left as it is.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
check_only=0
if [ "${1:-}" = "--check" ]; then
  check_only=1
  shift
fi
dest="${1:-$repo/.whl}"
py="${PYTHON:-$(bash "$repo/tools/launcher_python.sh")}"
MMCV_VERSION=2.1.0

# Pinned: requirements.txt's versions where it pins them, else the newest on PyPI when this list
# was written. gpu_check.sh --dry-run imports the pure-Python ones with our code.
WHEELS=(
  mmengine==0.10.7 mmsegmentation==1.2.2 mmdet==3.3.0
  # mmengine: config, logging and progress bars
  addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9 termcolor==3.3.0
  rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0
  # mmseg (tokenizer of its text models, metrics tables)
  ftfy==6.3.1 regex==2024.11.6 wcwidth==0.9.4 prettytable==3.18.0
  # mmdet.models, which our Mask2Former pixel decoder imports (masks, COCO API, plots)
  shapely==2.2.0 pycocotools==2.0.11 terminaltables==3.1.10 six==1.17.0
  matplotlib==3.9.2 kiwisolver==1.5.1 pyparsing==3.3.3 cycler==0.12.1 python-dateutil==4.0.0
  # mmcv 2.1.0's setup.py and mmengine's pkg_resources imports need setuptools < 70
  setuptools==69.5.1
  # the GPU tests
  pytest==8.3.3 pluggy==1.7.0 iniconfig==2.3.1
)
# The GPU machine's interpreter: CPython 3.12, glibc >= 2.28, x86-64.
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64)
pip=("$py" -m pip --disable-pip-version-check)
sdist="$dest/mmcv-$MMCV_VERSION.tar.gz"

pinned() {  # pinned FILE: whether a wheel file is one of WHEELS (same name and version)
  local base name version spec
  base=$(basename "$1" | tr 'A-Z-' 'a-z_')  # wheel names: lower-case, '_' for '-'
  for spec in "${WHEELS[@]}"; do
    name=$(echo "${spec%%==*}" | tr 'A-Z-' 'a-z_')
    version=${spec##*==}
    case "$base" in "${name}_${version}_"*) return 0 ;; esac
  done
  return 1
}
unpinned() {  # wheels in DEST that WHEELS does not name: gpu_check.sh installs every wheel there
  local f
  for f in "$dest"/*.whl; do
    [ -e "$f" ] && ! pinned "$f" && echo "$f"
  done
  return 0
}

mkdir -p "$dest"
if [ "$check_only" = 0 ]; then
  for f in $(unpinned); do
    echo "gpu_wheels: removing $(basename "$f"), which is not pinned (any more)"
    rm -f "$f"
  done
fi
# Offline first: every pinned wheel already in DEST (pip finds it there and copies nothing).
if "${pip[@]}" download -q --no-deps --no-index --find-links "$dest" -d "$dest" "${TARGET[@]}" \
     "${WHEELS[@]}" >/dev/null 2>&1 && [ -f "$sdist" ] && [ -z "$(unpinned)" ]; then
  echo "gpu_wheels: $dest is complete ($(ls "$dest"/*.whl | wc -l) wheels and $(basename "$sdist"))"
  exit 0
fi
if [ "$check_only" = 1 ]; then
  echo "gpu_wheels: $dest is incomplete; missing or not for CPython 3.12:" >&2
  for spec in "${WHEELS[@]}"; do
    # Wheel file names spell the project name lower-case with '_' for '-'.
    name=$(echo "${spec%%==*}" | tr 'A-Z-' 'a-z_')
    compgen -G "$dest/$name-${spec##*==}-*.whl" >/dev/null || echo "  $spec" >&2
  done
  [ -f "$sdist" ] || echo "  mmcv==$MMCV_VERSION (source distribution)" >&2
  unpinned | sed 's/^/  not pinned (remove it): /' >&2
  echo "run 'bash tools/gpu_wheels.sh' on a machine that reaches PyPI" >&2
  exit 1
fi


echo "gpu_wheels: downloading ${#WHEELS[@]} wheels for CPython 3.12 into $dest"
"${pip[@]}" download -q --no-deps -d "$dest" "${TARGET[@]}" "${WHEELS[@]}"

if [ ! -f "$sdist" ]; then
  echo "gpu_wheels: downloading mmcv $MMCV_VERSION's source distribution"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # pip reads the sdist's metadata by running its setup.py, which needs setuptools < 70 and a
  # wheel that still has bdist_wheel.
  "${pip[@]}" install -q --find-links "$dest" --target "$tmp/buildtools" setuptools==69.5.1 \
    'wheel<0.44'
  PYTHONPATH="$tmp/buildtools" "${pip[@]}" download -q --no-deps --no-binary :all: \
    --no-build-isolation "mmcv==$MMCV_VERSION" -d "$tmp"
  # Copy then rename: the file is complete or absent, never half-written.
  cp "$tmp/mmcv-$MMCV_VERSION.tar.gz" "$sdist.partial" && mv "$sdist.partial" "$sdist"
fi
echo "gpu_wheels: done, $(du -sh "$dest" | cut -f1) in $dest"
