# The model of the official golden fixture (README.md here): EoMT(num_q=20, num_blocks=4,
# num_classes=19) on timm's DINOv2-S with registers at patch 16, 128 px crops, Cityscapes.
_base_ = ['../../../configs/_base_/models/eomt_dinov2.py']
num_classes = 19
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(trunk=dict(name='vit_small_patch14_reg4_dinov2',
                             model_kwargs=dict(img_size=128, patch_size=16), pretrained=None)),
    decode_head=dict(in_channels=384, num_classes=num_classes, num_queries=20,
                     loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    test_cfg=dict(mode='slide', crop_size=(128, 128), stride=(64, 64)))
custom_imports = dict(imports=['mmseg_custom', 'mmseg_custom.models.eomt'],
                      allow_failed_imports=False)
