#!/usr/bin/env bash
# Distributed testing with torchrun: GPUS processes on this node (gloo on a machine without GPU).
#   bash dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py options, e.g. --out DIR]
#   CUDA_VISIBLE_DEVICES=0,1,2,3 . dist_test.sh CONFIG CHECKPOINT 4    # sourcing works too
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR and PORT (same on every node; default 29500).
# Single node: PORT defaults to a free port. PYTHON overrides the interpreter; by default an
# activated virtualenv, else this repository's .venv, else python on PATH.
# The body runs in a subshell, so a sourced run that fails returns an error instead of closing
# the caller's shell, and sets no variables there.
(
  set -euo pipefail
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  usage="usage: dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]"
  if [ $# -lt 3 ]; then echo "$usage" >&2; exit 2; fi
  config=$1
  checkpoint=$2
  gpus=$3
  if [ ! -f "$config" ]; then echo "dist_test.sh: config $config not found" >&2; exit 2; fi
  if ! [[ $gpus =~ ^[1-9][0-9]*$ ]]; then
    echo "dist_test.sh: GPUS must be a positive number of processes, got '$gpus'; $usage" >&2
    exit 2
  fi
  if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
  elif [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$here/.venv/bin/python" ]; then
    py="$here/.venv/bin/python"
  else
    py=python
  fi
  nnodes=${NNODES:-1}
  if [ -n "${PORT:-}" ]; then
    port=$PORT
  elif [ "$nnodes" -gt 1 ]; then
    port=29500
  else
    port=$("$py" -c 'import socket; print(socket.create_server(("", 0)).getsockname()[1])')
  fi
  "$py" -m torch.distributed.run \
    --nnodes="$nnodes" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="$port" \
    --nproc_per_node="$gpus" \
    "$here/tools/test.py" "$config" "$checkpoint" --launcher pytorch "${@:4}"
)
