#!/usr/bin/env bash
# Build the compiled deformable attention op (module vitsplit_msda_ext) and install it into a
# Python: $PYTHON if set, else this repository's .venv, else python3. Works from any directory.
#   bash ops/make.sh                  # CUDA kernels too when nvcc is found and a GPU is visible
#   FORCE_CUDA=1 bash ops/make.sh     # CUDA kernels without a visible GPU (a build node)
#   MAX_JOBS=4 bash ops/make.sh       # parallel compile jobs (ninja)
set -euo pipefail

ops_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$ops_dir")"
if [ -n "${PYTHON:-}" ]; then
  py="$PYTHON"
elif [ -x "$repo_dir/.venv/bin/python" ]; then
  py="$repo_dir/.venv/bin/python"
else
  py=python3
fi

echo "building vitsplit_msda_ext with $py (FORCE_CUDA=${FORCE_CUDA:-unset})"
"$py" -m pip install --disable-pip-version-check --no-build-isolation --no-deps "$ops_dir"
"$py" -c 'import torch, vitsplit_msda_ext as ext
print(f"vitsplit_msda_ext installed (CUDA kernels: {ext.with_cuda()})")'
