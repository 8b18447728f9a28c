#!/usr/bin/env bash
# Train linear_dinov2_vitsplit_large_896_20k_cityscapes as in the paper: 8 GPUs, seed 2023. Extra args go to tools/train.py.
# GPUS and CUDA_VISIBLE_DEVICES may be set; run from anywhere.
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
GPUS=${GPUS:-8}
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1,2,3,4,5,6,7} bash dist_train.sh \
    configs/cityscapes/vitsplit/linear_dinov2_vitsplit_large_896_20k_cityscapes.py "$GPUS" --seed 2023 "$@"
