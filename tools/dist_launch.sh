#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: run tools/SCRIPT under torchrun with NPROC processes.
#   bash tools/dist_launch.sh SCRIPT NPROC [script args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR and PORT (same on every node; default 29500).
# Single node: PORT defaults to a free port. PYTHON overrides the interpreter; by default an
# activated virtualenv, else this repository's .venv, else python on PATH.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
script=$1
nproc=$2
if ! [[ $nproc =~ ^[1-9][0-9]*$ ]]; then
  echo "GPUS must be a positive number of processes, got '$nproc'" >&2
  exit 2
fi
py=$(bash "$repo/tools/launcher_python.sh")
nnodes=${NNODES:-1}
if [ -n "${PORT:-}" ]; then
  port=$PORT
elif [ "$nnodes" -gt 1 ]; then
  port=29500
else
  port=$("$py" -c 'import socket; print(socket.create_server(("", 0)).getsockname()[1])')
fi
if ! [[ $port =~ ^[0-9]+$ ]]; then
  echo "PORT must be a port number, got '$port'" >&2
  exit 2
fi
# The master (node 0) listens on the port: a busy one would end in torchrun's long traceback.
if [ "${NODE_RANK:-0}" = 0 ] && ! "$py" -c \
    'import socket, sys; socket.create_server(("", int(sys.argv[1]))).close()' "$port" 2>/dev/null
then
  echo "Port $port is already in use (another training or test?). Set PORT to a free port, e.g." \
    "PORT=$((port + 1)); on a single node, leaving PORT unset picks a free one." >&2
  exit 2
fi
exec "$py" -m torch.distributed.run \
  --nnodes="$nnodes" \
  --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="$port" \
  --nproc_per_node="$nproc" \
  "$repo/tools/$script" "${@:3}" --launcher pytorch
