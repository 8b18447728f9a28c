# EoMT-L on DINOv2-L/16 with registers (tue-mps/eomt configs/dinov2/ade20k/semantic/
# eomt_large_512.yaml: 58.4 mIoU in the paper), ade20k, crop 512, total batch 4 x 4 GPUs = 16.
_base_ = [
    '../../_base_/models/eomt_dinov2.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/eomt_40k.py'
]
custom_imports = dict(imports=['mmseg_custom', 'mmseg_custom.models.eomt'],
                      allow_failed_imports=False)
custom_hooks = [
    dict(type='SegLabelCheckHook'),
    dict(type='EoMTMaskAnnealingHook', start_iters=[6520, 13040, 19560, 26080],
         end_iters=[13040, 19560, 26080, 32600]),
]
train_dataloader = dict(batch_size=4)
