#!/usr/bin/env bash
# Distributed testing with torchrun: GPUS processes on this node (gloo on a machine without GPU).
#   bash dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py options, e.g. --out DIR]
#   CUDA_VISIBLE_DEVICES=0,1,2,3 . dist_test.sh CONFIG CHECKPOINT 4    # sourcing works too
# NNODES, NODE_RANK, MASTER_ADDR, PORT and PYTHON: see tools/dist_launch.sh.
# The body runs in a subshell, so a sourced run that fails returns an error instead of closing
# the caller's shell, and sets no variables there.
(
  set -euo pipefail
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  if [ $# -lt 3 ]; then
    echo "usage: dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]" >&2; exit 2
  fi
  if [ ! -f "$1" ]; then echo "dist_test.sh: config $1 not found" >&2; exit 2; fi
  bash "$here/tools/dist_launch.sh" test.py "$3" "$1" "$2" "${@:4}"
)
