# ViT-Split-EoMT-L on DINOv3-L: frozen trunk, the queries in the task head (copies of blocks [20,
# 21, 22, 23]), the prior head on blocks [2, 5, 8, 11, 14, 17, 20, 23]; ade20k, crop 512, total
# batch 4 x 4 GPUs. DINOv3 (timm) at patch 16: masks at stride 4.
# Trained with ViT-Split's recipe (AdamW 2e-4, the copied blocks at 0.1x, 40k iterations).
_base_ = [
    '../../_base_/models/vitsplit_eomt.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
custom_imports = dict(imports=['mmseg_custom', 'mmseg_custom.models.eomt'],
                      allow_failed_imports=False)
model = dict(
    backbone=dict(
        trunk=dict(_delete_=True, type='TimmViT', name='vit_large_patch16_dinov3',
                   pretrained='dinov3_large'),
        out_indices=[2, 5, 8, 11, 14, 17, 20, 23],
        select_layers=[20, 21, 22, 23]),
    decode_head=dict(in_channels=1024, num_blocks=4))
custom_hooks = [
    dict(type='SegLabelCheckHook'),
    dict(type='EoMTMaskAnnealingHook', start_iters=[6520, 13040, 19560, 26080],
         end_iters=[13040, 19560, 26080, 32600]),
]
train_dataloader = dict(batch_size=4)
