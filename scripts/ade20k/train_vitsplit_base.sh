#!/usr/bin/env bash
# Train linear_dinov2_vitsplit_base_512_20k_ade20k as in the paper: 4 GPUs, seed 2023. Extra args go to tools/train.py.
# GPUS and CUDA_VISIBLE_DEVICES may be set; run from anywhere.
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
GPUS=${GPUS:-4}
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1,2,3} bash dist_train.sh \
    configs/ade20k/vitsplit/linear_dinov2_vitsplit_base_512_20k_ade20k.py "$GPUS" --seed 2023 "$@"
