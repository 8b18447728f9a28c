# ViT-Split-EoMT-L on DINOv2-L with registers (timm, native patch 14, frozen): the queries in the
# task head (copies of blocks [20, 21, 22, 23]), the prior head on blocks [2, 5, 8, 11, 14, 17, 20,
# 23]; cityscapes, crop 1024, total batch 4 x 4 GPUs (both from
# ../../_base_/datasets/cityscapes_1024.py); evaluation by the official windows.
# Trained with ViT-Split's recipe (AdamW 2e-4, the copied blocks at 0.1x, 40k iterations); the
# annealing windows are ../../_base_/eomt_runtime.py's.
_base_ = [
    '../../_base_/models/vitsplit_eomt.py', '../../_base_/datasets/cityscapes_1024.py',
    '../../_base_/eomt_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
num_classes = 19
model = dict(
    data_preprocessor=dict(size={{_base_.crop_size}}),
    backbone=dict(
        trunk=dict(name='vit_large_patch14_reg4_dinov2', pretrained='timm'),
        out_indices=[2, 5, 8, 11, 14, 17, 20, 23],
        select_layers=[20, 21, 22, 23]),
    decode_head=dict(in_channels=1024, num_classes=num_classes, num_blocks=4,
                     loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(crop_size={{_base_.crop_size}}))
