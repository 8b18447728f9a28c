# ViT-Split-EoMT-L on DINOv2-L: ./eomt_dinov2_vitsplit_small_512_40k_ade20k.py with the L trunk,
# its blocks and head width. Frozen trunk, the queries in the task head (copies of blocks [20, 21,
# 22, 23]), the prior head on blocks [2, 5, 8, 11, 14, 17, 20, 23]; ade20k, crop 512, total batch
# 4 x 4 GPUs. DINOv2 with registers (timm) at its native patch 14: frozen, it is not resampled
# (one upscaling block, masks at stride 7).
# Trained with ViT-Split's recipe (AdamW 2e-4, the copied blocks at 0.1x, 40k iterations).
_base_ = ['./eomt_dinov2_vitsplit_small_512_40k_ade20k.py']
model = dict(
    backbone=dict(
        trunk=dict(name='vit_large_patch14_reg4_dinov2'),
        out_indices=[2, 5, 8, 11, 14, 17, 20, 23],
        select_layers=[20, 21, 22, 23]),
    decode_head=dict(in_channels=1024, num_blocks=4))
custom_hooks = [  # one annealing window per query block: 4, as ../../_base_/eomt_runtime.py
    dict(type='SegLabelCheckHook'),
    dict(type='EoMTMaskAnnealingHook', start_iters=[6520, 13040, 19560, 26080],
         end_iters=[13040, 19560, 26080, 32600]),
]
