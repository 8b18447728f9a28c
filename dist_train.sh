#!/usr/bin/env bash
# Distributed training with torchrun: GPUS processes on this node (gloo on a machine without GPU).
#   bash dist_train.sh CONFIG GPUS [tools/train.py options, e.g. --seed 2023 --work-dir DIR]
#   CUDA_VISIBLE_DEVICES=0,1,2,3 . dist_train.sh CONFIG 4 --seed 2023    # sourcing works too
# NNODES, NODE_RANK, MASTER_ADDR, PORT and PYTHON: see tools/dist_launch.sh.
# The body runs in a subshell, so a sourced run that fails returns an error instead of closing
# the caller's shell, and sets no variables there.
(
  set -euo pipefail
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  if [ $# -lt 2 ]; then echo "usage: dist_train.sh CONFIG GPUS [train.py options]" >&2; exit 2; fi
  if [ ! -f "$1" ]; then echo "dist_train.sh: config $1 not found" >&2; exit 2; fi
  bash "$here/tools/dist_launch.sh" train.py "$2" "$1" "${@:3}"
)
