# EoMT-L on DINOv2-L/16 with registers (tue-mps/eomt configs/dinov2/ade20k/semantic/
# eomt_large_512.yaml: 58.4 mIoU in the paper), ade20k, crop 512, total batch 4 x 4 GPUs = 16.
# The annealing windows are eomt_runtime.py's (4 query blocks, 40k iterations).
_base_ = [
    '../../_base_/models/eomt_dinov2.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/eomt_runtime.py', '../../_base_/schedules/eomt_40k.py'
]
train_dataloader = dict(batch_size=4)
