# ViT-Split-EoMT-S on DINOv2-S: frozen trunk, the queries in the task head (copies of blocks [9, 10,
# 11]), the prior head on blocks [2, 5, 8, 11] (both as in ../../_base_/models/vitsplit_eomt.py);
# ade20k, crop 512, total batch 4 x 4 GPUs. DINOv2 with registers (timm) at its native patch 14:
# frozen, it is not resampled (one upscaling block, masks at stride 7).
# Trained with ViT-Split's recipe (AdamW 2e-4, the copied blocks at 0.1x, 40k iterations).
_base_ = [
    '../../_base_/models/vitsplit_eomt.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/eomt_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
model = dict(backbone=dict(trunk=dict(name='vit_small_patch14_reg4_dinov2', pretrained='timm')))
custom_hooks = [  # one annealing window per query block: 3
    dict(type='SegLabelCheckHook'),
    dict(type='EoMTMaskAnnealingHook', start_iters=[6520, 13040, 19560],
         end_iters=[13040, 19560, 26080]),
]
train_dataloader = dict(batch_size=4)
