# EoMT (Kerssies et al., CVPR 2025; tue-mps/eomt): DINOv2-L with registers (timm) at patch 16, the
# whole encoder fine-tuned, 100 queries in the last 4 blocks, masked attention annealed away in
# training (EoMTMaskAnnealingHook in the experiment configs), the Mask2Former set loss on every
# predicting layer, evaluation by the official windows. Official checkpoints (Lightning .ckpt or
# pytorch_model.bin) load with mmseg.apis.init_model(config, ckpt) or load_from. Experiment configs
# import mmseg_custom.models.eomt (custom_imports) and add EoMTMaskAnnealingHook (custom_hooks).
# Pretrained trunk: timm's DINOv2 is patch 14; the official resamples it to patch 16 as timm
# does. Write that file once: python tools/convert_dinov2_patch16.py
#   <timm vit_large_patch14_reg4_dinov2 model.safetensors> \
#   checkpoints/dinov2_vitl14_reg4_p16_512.pth
num_classes = 150
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # the official ImageNet normalisation, x 255, RGB
    std=[58.395, 57.12, 57.375],
    size=(512, 512),
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EoMT',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='EoMTEncoder',
        trunk=dict(
            type='TimmViT',
            name='vit_large_patch14_reg4_dinov2',
            model_kwargs=dict(img_size=512, patch_size=16),
            pretrained='checkpoints/dinov2_vitl14_reg4_p16_512.pth')),
    decode_head=dict(
        type='EoMTHead',
        in_channels=1024,
        num_classes=num_classes,
        num_queries=100,
        num_blocks=4,
        masked_attn=True,
        # The official MaskClassificationLoss (transformers' Mask2FormerLoss) in mmdet's parts.
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      reduction='mean', class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                       loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True,
                       reduction='mean', naive_dice=True, eps=1.0, loss_weight=5.0),
        train_cfg=dict(
            num_points=12544, oversample_ratio=3.0, importance_sample_ratio=0.75,
            assigner=dict(type='mmdet.HungarianAssigner', match_costs=[
                dict(type='mmdet.ClassificationCost', weight=2.0),
                dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)]))),
    train_cfg=dict(),
    # The official evaluation: short side to 512, ceil(long / short) evenly spaced windows.
    test_cfg=dict(mode='windows', crop_size=(512, 512)))
