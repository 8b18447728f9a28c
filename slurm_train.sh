#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU.
#   bash slurm_train.sh PARTITION JOB_NAME CONFIG [GPUS] [tools/train.py options, e.g. --seed 2023]
# GPUS (default 4, also read from the GPUS variable) tasks run GPUS_PER_NODE (default: min(GPUS, 8))
# to a node with CPUS_PER_TASK (default 5) CPUs each; SRUN_ARGS adds srun options. PYTHON overrides
# the interpreter; by default an activated virtualenv, else this repository's .venv, else python.
# The body runs in a subshell, so a sourced run that fails returns an error instead of closing
# the caller's shell, and sets no variables there.
(
  set -euo pipefail
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  usage="usage: slurm_train.sh PARTITION JOB_NAME CONFIG [GPUS] [train.py options]"
  if [ $# -lt 3 ]; then echo "$usage" >&2; exit 2; fi
  partition=$1
  job_name=$2
  config=$3
  shift 3
  gpus=${GPUS:-4}
  if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then gpus=$1; shift; fi
  if ! [[ $gpus =~ ^[1-9][0-9]*$ ]]; then
    echo "slurm_train.sh: GPUS must be a positive number, got '$gpus'; $usage" >&2
    exit 2
  fi
  if [ ! -f "$config" ]; then echo "slurm_train.sh: config $config not found" >&2; exit 2; fi
  gpus_per_node=${GPUS_PER_NODE:-$((gpus < 8 ? gpus : 8))}
  py=$(PYTHON="${PYTHON:-}" bash "$here/tools/launcher_python.sh")  # also an unexported PYTHON
  # SRUN_ARGS is a list of options: split on white space on purpose.
  # shellcheck disable=SC2086
  srun -p "$partition" \
    --job-name="$job_name" \
    --gres=gpu:"$gpus_per_node" \
    --ntasks="$gpus" \
    --ntasks-per-node="$gpus_per_node" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "$py" -u "$here/tools/train.py" "$config" --launcher slurm "$@"
)
